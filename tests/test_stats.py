"""The two-level statistics of rlhf.judge.stats on data drawn from a known model, no training:
prompts with their difficulty, settings with how each prompt suits them, training seeds with
their effect, and noise; win outcomes are 0/1 (a latent score above 0). Simulations are
vectorised over sweeps (a few seconds in all) and seeded, so every count is reproducible;
the counts are printed (pytest -s shows them)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rlhf.judge import stats

PROMPT, PROMPT_SETTING, SEED, NOISE = 1.0, 0.3, 0.25, 1.0


def sweeps(rng, count, settings=4, seeds=3, prompts=60, shift=(), binary=True, seed_sd=SEED,
           prompt_setting_sd=PROMPT_SETTING):
    """`count` simulated sweeps: an array (count, settings, seeds, prompts) of each setting's
    figure per seed and prompt; setting k's latent mean is shift[k] (0 when not given)."""
    mean = np.zeros((1, settings, 1, 1))
    mean[0, :len(shift), 0, 0] = shift
    latent = (mean + rng.normal(0, PROMPT, (count, 1, 1, prompts))
              + rng.normal(0, prompt_setting_sd, (count, settings, 1, prompts))
              + rng.normal(0, seed_sd, (count, settings, seeds, 1))
              + rng.normal(0, NOISE, (count, settings, seeds, prompts)))
    return (latent > 0).astype(float) if binary else latent


def tables(y):
    return [y[:, k] for k in range(y.shape[1])]


def declared(result):
    """Per simulated sweep: whether any pair of its settings was declared separable."""
    return np.any(np.stack([entry["separable"] for entry in result.values()], axis=-1), axis=-1)


def overlap_rule(y):
    """Today's rule per pair: the Student-t intervals (n-1 df) of the seed means do not overlap."""
    seed_means = y.mean(axis=-1)  # (count, settings, seeds)
    n = seed_means.shape[-1]
    mean, sd = seed_means.mean(axis=-1), seed_means.std(axis=-1, ddof=1)
    half = scipy_stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    low, high = mean - half, mean + half
    k = y.shape[1]
    return {(i, j): (low[:, i] > high[:, j]) | (low[:, j] > high[:, i]) for i in range(k) for j in range(i + 1, k)}


def test_a_over_a_pairs_are_declared_different_in_at_most_5_percent():
    """Two settings that are the same (A/A), 1000 simulated pairs, 3 seeds and 60 prompts each,
    0/1 outcomes; and the same with 2 seeds, and with latent (continuous) figures."""
    rng = np.random.default_rng(2026)
    for seeds, binary in ((3, True), (2, True), (3, False)):
        y = sweeps(rng, 1000, settings=2, seeds=seeds, binary=binary)
        result = stats.pairwise(tables(y))
        count = int(np.sum(result[(0, 1)]["separable"]))
        print(f"A/A, {seeds} seeds, {'0/1' if binary else 'continuous'}: {count} of 1000 declared different")
        assert count <= 50


def test_a_sweep_of_four_equal_settings_names_no_better_one_in_95_percent_of_sweeps():
    """4 settings x 3 seeds, all equal: the family of its 6 pairs (Holm) declares some
    difference in at most 5% of 400 simulated sweeps."""
    rng = np.random.default_rng(7)
    y = sweeps(rng, 400)
    count = int(declared(stats.pairwise(tables(y))).sum())
    print(f"A/A sweeps of 4 settings x 3 seeds: {count} of 400 declared some difference (family-wise)")
    assert count <= 20


def test_a_known_small_difference_is_found_at_a_reported_rate_and_more_often_than_by_interval_overlap():
    """A/B: one setting 0.8 latent units better than three equal ones (a win rate of 0.70
    against 0.50). The paired rule finds it at a rate printed here; every separation it makes is
    in the direction of the means; and it separates at least as many pairs as today's rule."""
    rng = np.random.default_rng(11)
    y = sweeps(rng, 400, shift=(0.8,))
    result = stats.pairwise(tables(y))
    found = np.any(np.stack([result[(0, k)]["separable"] for k in (1, 2, 3)], axis=-1), axis=-1)
    wrong = np.any(np.stack([result[(i, k)]["separable"] for i in (1, 2) for k in range(i + 1, 4)], axis=-1),
                   axis=-1)
    overlap = overlap_rule(y)
    paired_pairs = sum(int(np.sum(entry["separable"])) for entry in result.values())
    overlap_pairs = sum(int(np.sum(v)) for v in overlap.values())
    print(f"A/B (win rate 0.70 against 0.50, 4 settings x 3 seeds x 60 prompts): paired rule separates the better setting "
          f"from some other in {found.mean():.0%} of 400 sweeps (separations: paired {paired_pairs}, "
          f"interval overlap {overlap_pairs}); a false one among the equal settings in {wrong.mean():.1%}")
    assert found.mean() > 0.5 and wrong.mean() <= 0.05  # the rate itself is printed
    assert paired_pairs >= overlap_pairs
    for (i, k), entry in result.items():  # a separation's sign is the sign of the means' difference
        means = y[:, i].mean(axis=(-2, -1)) - y[:, k].mean(axis=(-2, -1))
        assert np.all(np.sign(entry["difference"][entry["separable"]]) == np.sign(means[entry["separable"]]))


def test_a_settings_own_interval_covers_its_true_win_rate_and_stays_in_0_1():
    """The setting's interval from both levels covers the true win rate (the latent model's
    P(score > 0)) in about 95% of sweeps with 3 seeds, and never leaves [0, 1], even for a
    setting that wins almost always, with 2 seeds."""
    rng = np.random.default_rng(5)
    total_sd = np.sqrt(PROMPT ** 2 + PROMPT_SETTING ** 2 + SEED ** 2 + NOISE ** 2)
    for shift, seeds in ((0.5, 3), (3.5, 2), (-3.5, 2)):
        y = sweeps(rng, 1000, settings=2, seeds=seeds, shift=(shift,))
        parts = stats.components(tables(y))
        figure = stats.interval(y[:, 0], parts, bounds=(0.0, 1.0))
        truth = scipy_stats.norm.cdf(shift / total_sd)
        covered = np.mean((figure["ci_low"] <= truth) & (truth <= figure["ci_high"]))
        print(f"win rate {truth:.3f}, {seeds} seeds: interval covers it in {covered:.1%} of 1000 sweeps")
        assert np.all((0 <= figure["ci_low"]) & (figure["ci_low"] <= figure["mean"]))
        assert np.all((figure["mean"] <= figure["ci_high"]) & (figure["ci_high"] <= 1))
        if seeds == 3:
            assert 0.92 <= covered <= 0.98


def test_a_setting_with_every_outcome_a_win_has_an_interval_below_1_not_a_point():
    y = np.ones((3, 60))
    figure = stats.interval(y, stats.components([y, np.zeros((3, 60))]), bounds=(0.0, 1.0))
    assert figure["mean"] == 1.0 and figure["ci_high"] == 1.0 and 0.9 < figure["ci_low"] < 1.0


def test_holm_is_statsmodels_step_down():
    reject, adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02]) and reject == [True, False, False, True]


def test_the_difference_of_b_less_a_is_minus_a_less_b():
    rng = np.random.default_rng(3)
    y = sweeps(rng, 1, settings=3, shift=(1.0,))[0]
    result = stats.pairwise(list(y))
    forward, backward = stats.between(result, 0, 2), stats.between(result, 2, 0)
    assert backward["difference"] == pytest.approx(-forward["difference"])
    assert (backward["ci_low"], backward["ci_high"]) == pytest.approx((-forward["ci_high"], -forward["ci_low"]))
    assert forward["difference"] == pytest.approx(y[0].mean() - y[2].mean())


def test_the_batch_holm_of_simulations_is_statsmodels_holm():
    rng = np.random.default_rng(1)
    families = rng.uniform(0, 0.1, (30, 6)) ** rng.uniform(0.5, 2, (30, 1))
    reject, adjusted = stats.holm_batch(families)
    for row, r, a in zip(families, reject, adjusted):
        expected_reject, expected = stats.holm(list(row))
        assert list(r) == expected_reject and list(a) == pytest.approx(expected)


def test_the_plan_is_confirmed_by_simulation_within_20_percent():
    """From the components one simulated sweep measured, --plan's numbers (the prompts needed at
    4 and 6 seeds for 80% power): simulated 400 times at those numbers with the true model, the
    paired test separates the pair in 80% +- 20% (relative) of them; and at a quarter of the
    prompts, clearly less often."""
    rng = np.random.default_rng(9)
    measured = sweeps(rng, 1, settings=4, seeds=3, prompts=200, binary=False)[0]
    parts = stats.components(list(measured))
    seed, prompt = float(parts.seed), stats.pair_prompt_variance(list(measured), parts)
    residual = float(parts.residual)
    difference = 0.8
    for row in stats.plan(difference, seed, prompt, residual, seed_counts=(4, 6)):
        assert row["prompts"] is not None and row["power"] >= 0.8
        for prompts, low, high in ((row["prompts"], 0.64, 0.96), (max(2, row["prompts"] // 4), 0.0, 0.6)):
            y = sweeps(rng, 400, settings=2, seeds=row["seeds"], prompts=prompts, binary=False, shift=(difference,))
            found = float(np.mean(stats.pairwise(tables(y))[(0, 1)]["separable"]))
            print(f"plan: {row['seeds']} seeds x {prompts} prompts for a difference of {difference}: separated in "
                  f"{found:.0%} of 400 simulated pairs (planned {row['power']:.0%} at {row['prompts']} prompts)")
            assert low <= found <= high


def two_level_bootstrap_declares(y, rng, resamples=400):
    """Per simulated pair (y: count x 2 settings x seeds x prompts): whether a percentile
    bootstrap that resamples prompts (shared by both settings) and each setting's seeds puts
    its 95% interval of the difference off 0; the method this module does not use."""
    count, _, seeds, prompts = y.shape
    prompt_draw = rng.integers(0, prompts, (count, resamples, prompts))
    means = []
    for k in range(2):
        seed_draw = rng.integers(0, seeds, (count, resamples, seeds))[..., None].repeat(prompts, -1)
        means.append(np.take_along_axis(y[:, k][:, None], seed_draw, axis=2).mean(axis=2))
    d = np.take_along_axis(means[0] - means[1], prompt_draw, axis=2).mean(axis=2)
    low, high = np.percentile(d, [2.5, 97.5], axis=1)
    return (low > 0) | (high < 0)


def test_a_bootstrap_over_3_seeds_declares_too_many_a_over_a_differences_the_mixed_model_does_not():
    """Why the mixed model: with 3 seeds whose effect is large (0.5 latent sd), the two-level
    bootstrap declares A/A differences well above 5% of the time; the mixed model at most 5%."""
    rng = np.random.default_rng(21)
    y = sweeps(rng, 300, settings=2, seeds=3, seed_sd=0.5)
    bootstrap = float(np.mean(two_level_bootstrap_declares(y, rng)))
    mixed = float(np.mean(stats.pairwise(tables(y))[(0, 1)]["separable"]))
    print(f"A/A, 3 seeds (seed sd 0.5): two-level bootstrap declares {bootstrap:.1%}, mixed model {mixed:.1%} "
          "of 300 pairs")
    assert bootstrap > 0.07 and mixed <= 0.05


def test_one_jobs_interval_of_a_win_rate_near_1_stays_in_0_1_where_students_t_leaves_it():
    """A job's own figure over its prompts (the stage's intervals): 59 wins of 60 prompts give a
    t-interval above 1; the job's interval is Wilson-type, inside [0, 1] and around the mean,
    while an unbounded figure keeps Student's t."""
    wins = [1.0] * 59 + [0.0]
    t_high = stats.summarize(wins)["ci_high"]
    figure = stats.over_prompts(wins, (0.0, 1.0))
    print(f"59/60 wins: t-interval up to {t_high:.4f}, the job's [{figure['ci_low']:.4f}, {figure['ci_high']:.4f}]")
    assert t_high > 1.0
    assert 0.0 <= figure["ci_low"] < figure["mean"] < figure["ci_high"] <= 1.0
    assert stats.over_prompts(wins) == stats.summarize(wins)
    none = stats.over_prompts([0.0] * 60, (0.0, 1.0))
    assert none["ci_low"] == 0.0 and 0.0 < none["ci_high"] < 0.1


def test_one_jobs_interval_of_a_share_covers_it_near_the_bound():
    """Over 2000 simulated jobs of 60 prompts with a true win rate of 0.95 (half-wins for ties
    included), the job's interval covers 0.95 in at least 92% and stays in [0, 1] always."""
    rng = np.random.default_rng(11)
    covered, inside = 0, True
    for _ in range(2000):
        wins = rng.choice([1.0, 0.5, 0.0], size=60, p=[0.93, 0.04, 0.03])
        figure = stats.over_prompts(list(wins), (0.0, 1.0))
        covered += figure["ci_low"] <= 0.95 <= figure["ci_high"]
        inside &= 0.0 <= figure["ci_low"] and figure["ci_high"] <= 1.0
    print(f"true win rate 0.95, 60 prompts: covered in {covered / 2000:.1%} of 2000 jobs")
    assert inside and covered / 2000 >= 0.92
