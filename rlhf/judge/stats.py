"""Confidence intervals said honestly.

Two kinds of figure live here:

- `summarize`: the mean of a few values (seeds) with the interval of its level, by Student's t
  with n-1 degrees of freedom (the figure of a metric that exists only once per job).
- The two-level statistics of a generation figure, measured per prompt and per seed: every job
  of a sweep answers the same prompts with the same decoding seed, so a figure is a table
  (seeds x prompts) per setting and two settings can be compared prompt by prompt.

The two-level model (a crossed mixed model, settings fixed, seeds and prompts random):

    y[s, j, i] = mu[s] + p[i] + sp[s, i] + u[s, j] + e[s, j, i]

with p the prompt's difficulty (shared by every setting: it cancels in a paired difference),
sp how much a prompt suits a setting, u the training seed's effect and e the rest (decoding,
judge). Its variance components are estimated by the method of moments of the balanced
design (the ANOVA estimators; Searle, Casella and McCulloch, *Variance Components*, 1992,
ch. 4): the seed and residual variances pooled
over every setting of the sweep (one seed variance for the sweep: with 2-3 seeds per setting
that is what makes them estimable), the prompt terms from each setting or pair. Intervals and
tests use Student's t with Satterthwaite's degrees of freedom (Satterthwaite 1946).

Why not a bootstrap over seeds and prompts: with 2 or 3 seeds a setting has 3 or 10 distinct
resamples of its seeds, and the bootstrap variance of a seed mean is (J-1)/J of the right one,
so its intervals are too short exactly where a sweep is small (tests/test_stats.py: 12% of
simulated A/A pairs declared different with 3 seeds of a large seed effect). The mixed model pools the seed
variance over the sweep and says its degrees of freedom. A seed mean square below the
residual's is raised to it (conservative: simulated A/A rates of 2-4% at a 5% level).

A sweep's comparisons are one family: every pair of settings, Holm-corrected, so that a
best-setting sentence (the best against each other one) keeps its family-wise error at most
1 - level whichever setting turns out best (comparing only the selected best against the
others would not: the best is the largest of several noisy means).

A setting's own interval of a figure bounded on both sides (a win rate, a share) is the
Wilson score interval at the effective sample size of the two-level variance, with the
degrees-of-freedom correction of Korn and Graubard (1998, Survey Methodology 24:193-201)
(statsmodels' proportion_confint): inside the figure's range by construction. Many
comparisons are corrected by Holm's step-down method (Holm 1979; statsmodels multipletests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
POWER = 0.8


def _central_t(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df > 0: the finite series of Abramowitz and
    Stegun 26.7.3 (odd df) and 26.7.4 (even df), exact up to rounding."""
    theta = math.atan(t / math.sqrt(df))
    cos = math.cos(theta)
    if df % 2:
        term, total = cos, 0.0
        for j in range(1, (df - 1) // 2 + 1):  # cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ... cos^(df-2)
            total += term
            term *= cos * cos * (2 * j) / (2 * j + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term, total = 1.0, 0.0
    for j in range(1, df // 2 + 1):  # 1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... cos^(df-2)
        total += term
        term *= cos * cos * (2 * j - 1) / (2 * j)
    return math.sin(theta) * total


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| <= t) = level, Student's t with df degrees of freedom: the half-width
    of a two-sided interval in standard errors (4.303 for df=2 at 95%)."""
    if df < 1 or not 0 < level < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0 < level < 1, not df={df}, level={level}")
    low, high = 0.0, 1.0
    while _central_t(high, df) < level:
        low, high = high, high * 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if _central_t(middle, df) < level else (low, middle)
    return (low + high) / 2


def summarize(values: list[float], level: float = LEVEL) -> dict[str, Any]:
    """n, mean, sample std (n-1) and the level confidence interval of the mean by Student's t
    with n-1 degrees of freedom; with one value no std and no interval (None)."""
    n = len(values)
    mean = math.fsum(values) / n if n else None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    half = t_quantile(n - 1, level) * std / math.sqrt(n) if n > 1 else None
    return {"n": n, "mean": mean, "std": std,
            "ci_low": mean - half if half is not None else None,
            "ci_high": mean + half if half is not None else None}


# --- the two-level model ----------------------------------------------------------------------

METHOD = ("two-level mixed model over seeds and prompts (method-of-moments variance components, seed "
          "variance pooled over the sweep's settings; Student's t with Satterthwaite degrees of freedom)")
PAIRED = "paired by prompt and decoding seed"


@dataclass
class Components:
    """The sweep's pooled variance components of one figure (arrays over any leading batch
    axes, as a simulation has): the seed variance `seed` (sigma_u^2, truncated at 0), the
    residual variance `residual` (sigma_e^2), the mean squares they come from and their
    degrees of freedom, and the number of prompts."""

    seed: np.ndarray
    residual: np.ndarray
    seed_ms: np.ndarray
    seed_df: int
    residual_df: int
    prompts: int


def components(tables: Sequence[np.ndarray]) -> Components:
    """The pooled seed and residual variance of a sweep's figure.

    Args:
        tables: one array per setting, shape (..., seeds, prompts): the figure per seed and
            prompt (a prompt's samples averaged first), the same prompts in the same order in
            every table; settings may have different numbers of seeds.

    Returns:
        The Components; with no setting of two or more seeds, seed_df is 0 and the variances
        are nan (not estimable).
    """
    prompts = tables[0].shape[-1]
    seed_ss, residual_ss, seed_df, residual_df = 0.0, 0.0, 0, 0
    for y in tables:
        seeds = y.shape[-2]
        if seeds < 2:
            continue
        seed_means = y.mean(axis=-1, keepdims=True)
        prompt_means = y.mean(axis=-2, keepdims=True)
        grand = y.mean(axis=(-2, -1), keepdims=True)
        seed_ss = seed_ss + prompts * ((seed_means - grand) ** 2).sum(axis=(-2, -1))
        residual_ss = residual_ss + ((y - seed_means - prompt_means + grand) ** 2).sum(axis=(-2, -1))
        seed_df += seeds - 1
        residual_df += (seeds - 1) * (prompts - 1)
    if not seed_df:
        nan = np.full(tables[0].shape[:-2], np.nan)
        return Components(nan, nan, nan, 0, 0, prompts)
    seed_ms = np.asarray(seed_ss / seed_df)
    residual = np.asarray(residual_ss / max(residual_df, 1))
    seed = np.maximum(0.0, (seed_ms - residual) / prompts)
    return Components(seed, residual, seed_ms, seed_df, residual_df, prompts)


def _satterthwaite(terms: list[tuple[Any, Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The variance sum_k c_k * MS_k (truncated at 0) and Satterthwaite's degrees of freedom
    (sum c_k MS_k)^2 / sum (c_k MS_k)^2 / df_k, for terms (c_k, MS_k, df_k)."""
    variance = sum(np.asarray(c) * np.asarray(ms) for c, ms, _ in terms)
    denominator = sum((np.asarray(c) * np.asarray(ms)) ** 2 / df for c, ms, df in terms)
    variance = np.maximum(variance, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denominator > 0, variance ** 2 / np.where(denominator > 0, denominator, 1.0), np.inf)
    return variance, np.maximum(df, 1.0)


def _terms(parts: Components, weight: float, spread: Any, prompts: int) -> list[tuple[Any, Any, Any]]:
    """The variance weight * (sigma_u^2 + sigma_e^2 / P) + (spread - weight * sigma_e^2) / P as
    mean-square terms: the seed level from the pooled seed mean square (what the seed means
    vary by, the prompts held fixed), the prompt level from `spread` (the variance over
    prompts of the seed-averaged figure or difference) less the residual's share, left out
    where that is not positive (no prompt-by-setting variance to add)."""
    residual = weight * parts.residual
    extra = np.asarray(spread) > residual
    scale = np.where(extra, 1 / prompts, 0.0)
    # E[MS_seed] = P sigma_u^2 + sigma_e^2 >= sigma_e^2: a seed mean square below the residual's
    # is raised to it (the seed variance estimated as 0, as in `components`): the seed means
    # cannot vary by less than their own noise. Its degrees of freedom stay the seed level's
    # (taking the residual's after such a pretest made the test liberal in simulation).
    seed_ms = np.maximum(parts.seed_ms, parts.residual)
    return [(weight / prompts, seed_ms, parts.seed_df), (scale, spread, max(prompts - 1, 1)),
            (-scale * weight, parts.residual, max(parts.residual_df, 1))]


def difference(a: np.ndarray, b: np.ndarray, parts: Components, level: float = LEVEL,
               bounds: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    """The paired difference mean(a) - mean(b) of two settings on the same prompts.

    Args:
        a, b: the two settings' tables (..., seeds, prompts), the same prompts in both.
        parts: the sweep's pooled components (`components` of every setting's table).
        level: the interval's level.
        bounds: the figure's possible range; the difference's interval is kept inside
            [low - high, high - low].

    Returns:
        difference, se, df, ci_low, ci_high and the two-sided p-value of "no difference"
        (arrays over the batch axes; floats without them). Var = h MS_seed / P +
        max(0, S_d^2 - h MS_e) / P with h = 1/J_a + 1/J_b, MS_seed the pooled seed mean square
        (P sigma_u^2 + sigma_e^2), MS_e the pooled residual and S_d^2 the variance over prompts
        of the prompt-wise difference of the seed means (2 sigma_sp^2 + h sigma_e^2).
    """
    from scipy import stats as scipy_stats

    prompts = a.shape[-1]
    d = a.mean(axis=-2) - b.mean(axis=-2)
    weight = 1 / a.shape[-2] + 1 / b.shape[-2]
    terms = _terms(parts, weight, d.var(axis=-1, ddof=1), prompts)
    variance, df = _satterthwaite(terms)
    estimate = d.mean(axis=-1)
    se = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, estimate / np.where(se > 0, se, 1.0), np.where(estimate == 0, 0.0, np.inf))
    p = 2 * scipy_stats.t.sf(np.abs(t), df)
    half = scipy_stats.t.ppf((1 + level) / 2, df) * se
    low, high = estimate - half, estimate + half
    if bounds[0] is not None and bounds[1] is not None:
        width = bounds[1] - bounds[0]
        low, high = np.maximum(low, -width), np.minimum(high, width)
    return _floats({"difference": estimate, "se": se, "df": df, "ci_low": low, "ci_high": high, "p": p})


def interval(y: np.ndarray, parts: Components, level: float = LEVEL,
             bounds: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    """A setting's mean over its seeds and prompts, with its interval from both levels.

    Args:
        y: the setting's table (..., seeds, prompts).
        parts: the sweep's pooled components.
        level: the interval's level.
        bounds: the figure's possible range (low, high; None: unbounded on that side).

    Returns:
        mean, se, df, ci_low, ci_high and `interval` (how it was made). Var = MS_seed / (J P) +
        max(0, S_c^2 - MS_e / J) / P, with S_c^2 the variance over prompts of the
        seed-averaged figure. Bounded on
        both sides: the Wilson score interval at the effective sample size mean(1-mean)/Var
        (at most seeds x prompts), made smaller by (z / t_df)^2 (Korn and Graubard 1998), so
        the interval stays inside the range; else mean +- t_df se, cut at a bound it has.
    """
    prompts, seeds = y.shape[-1], y.shape[-2]
    by_prompt = y.mean(axis=-2)
    terms = _terms(parts, 1 / seeds, by_prompt.var(axis=-1, ddof=1), prompts)
    variance, df = _satterthwaite(terms)
    mean = by_prompt.mean(axis=-1)
    low, high, how = _inside(mean, variance, df, seeds * prompts, bounds, level)
    out = _floats({"mean": mean, "se": np.sqrt(variance), "df": df, "ci_low": low, "ci_high": high})
    out["interval"] = f"{how}, from the two-level variance (Satterthwaite df)"
    return out


def _inside(mean: Any, variance: Any, df: Any, observations: int,
            bounds: tuple[float | None, float | None], level: float) -> tuple[Any, Any, str]:
    """The interval of a mean with this variance and degrees of freedom that stays in the
    figure's range.

    Args:
        mean, variance, df: the estimate, its variance and the variance's degrees of freedom.
        observations: the most observations the mean can stand for (its effective size's cap).
        bounds: the figure's possible range (low, high; None: unbounded on that side).
        level: the interval's level.

    Returns:
        (low, high, how). Bounded on both sides: the Wilson score interval at the effective
        sample size mean(1-mean)/variance (at most `observations`), made smaller by
        (z / t_df)^2 (Korn and Graubard 1998); at a bound (every value 0, or 1) the variance
        says nothing of the effective size, so the number of observations is taken. Else mean
        +- t_df se, cut at a bound it has.
    """
    from scipy import stats as scipy_stats

    quantile = scipy_stats.t.ppf((1 + level) / 2, df)
    low_bound, high_bound = bounds
    if low_bound is None or high_bound is None:
        se = np.sqrt(variance)
        low, high = mean - quantile * se, mean + quantile * se
        if low_bound is not None:
            low = np.maximum(low, low_bound)
        if high_bound is not None:
            high = np.minimum(high, high_bound)
        return low, high, "mean +- t se"
    from statsmodels.stats.proportion import proportion_confint

    width = high_bound - low_bound
    share = np.clip((mean - low_bound) / width, 0.0, 1.0)
    scaled = np.asarray(variance) / width ** 2
    inside = (scaled > 0) & (share > 0) & (share < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        effective = np.where(inside, share * (1 - share) / np.where(inside, scaled, 1.0), np.inf)
    z = scipy_stats.norm.ppf((1 + level) / 2)
    effective = np.maximum(np.minimum(effective, observations) * (z / quantile) ** 2, 1e-9)
    low, high = proportion_confint(share * effective, effective, alpha=1 - level, method="wilson")
    low, high = low_bound + width * np.asarray(low), low_bound + width * np.asarray(high)
    # Rounding aside, the Wilson interval holds its mean and stays in the range.
    low = np.clip(np.minimum(low, mean), low_bound, high_bound)
    high = np.clip(np.maximum(high, mean), low_bound, high_bound)
    return low, high, "Wilson score interval at the effective sample size (Korn-Graubard df correction)"


def over_prompts(values: Sequence[float], bounds: tuple[float | None, float | None] = (None, None),
                 level: float = LEVEL) -> dict[str, Any]:
    """One job's figure: the mean over its prompts (a prompt's samples averaged first), with an
    interval that stays in the figure's range.

    Args:
        values: one value per prompt.
        bounds: the figure's possible range (None: unbounded on that side).
        level: the interval's level.

    Returns:
        n, mean, std and ci_low, ci_high: the variance of the mean over prompts (s^2 / n, n-1
        degrees of freedom) put through the Wilson score interval at its effective size when the
        figure is bounded on both sides (a win rate, a share), else Student's t; with fewer than
        two prompts no interval (None).
    """
    n = len(values)
    out = summarize(list(values), level)
    if n < 2:
        return out
    low, high, _ = _inside(out["mean"], out["std"] ** 2 / n, n - 1, n, bounds, level)
    return {**out, "ci_low": float(low), "ci_high": float(high)}


def _floats(values: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in values.items()}


def holm(pvalues: Sequence[float], level: float = LEVEL) -> tuple[list[bool], list[float]]:
    """Holm's step-down correction of a family of p-values (statsmodels multipletests):
    which are rejected at family-wise error 1 - level, and the adjusted p-values."""
    if not len(pvalues):
        return [], []
    from statsmodels.stats.multitest import multipletests

    reject, adjusted, _, _ = multipletests(list(pvalues), alpha=1 - level, method="holm")
    return [bool(r) for r in reject], [float(p) for p in adjusted]


def holm_batch(pvalues: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Holm's correction of many families at once (the last axis is a family), for
    simulations: the same rule as `holm` (tests/test_stats.py checks it against statsmodels,
    whose multipletests runs a full garbage collection per call, 0.2 s in a large process).
    Adjusted p_(i) = max over k <= i of min(1, (m - k + 1) p_(k)), p sorted ascending."""
    m = pvalues.shape[-1]
    order = np.argsort(pvalues, axis=-1)
    ranked = np.take_along_axis(pvalues, order, axis=-1)
    adjusted_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked), axis=-1)
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return adjusted <= 1 - level, adjusted


def pairwise(tables: Sequence[np.ndarray], level: float = LEVEL,
             bounds: tuple[float | None, float | None] = (None, None)) -> dict[tuple[int, int], dict[str, Any]]:
    """Every pair of settings, paired by prompt, Holm-corrected as one family: the claims a
    best-setting sentence makes (best against each other one) are among them, so its
    family-wise error is at most 1 - level whichever setting turns out best.

    Args:
        tables: one (..., seeds, prompts) array per setting, the same prompts in each (any
            leading batch axes, as a simulation has: each batch element is its own family).
        level: the family's level (1 - its family-wise error rate).
        bounds: the figure's possible range.

    Returns:
        {(i, k): entry} for i < k: the `difference` of setting i less setting k with its
        interval and p, `p_holm` (Holm-adjusted over the family) and `separable` (rejected).
    """
    parts = components(tables)
    pairs = [(i, k) for i in range(len(tables)) for k in range(i + 1, len(tables))]
    out = {pair: difference(tables[pair[0]], tables[pair[1]], parts, level, bounds) for pair in pairs}
    if not pairs:
        return out
    family = np.stack([np.asarray(out[pair]["p"], dtype=float) for pair in pairs], axis=-1)
    if family.ndim == 1:
        reject, adjusted = (np.asarray(v) for v in holm(family, level))
    else:
        reject, adjusted = holm_batch(family, level)
    for index, pair in enumerate(pairs):
        entry = out[pair]
        entry["p_holm"] = float(adjusted[index]) if adjusted.ndim == 1 else adjusted[..., index]
        entry["separable"] = bool(reject[index]) if reject.ndim == 1 else reject[..., index]
    return out


def between(result: dict[tuple[int, int], dict[str, Any]], i: int, k: int) -> dict[str, Any]:
    """Setting i less setting k from `pairwise`'s result, whichever order it holds them in."""
    if (i, k) in result:
        return result[(i, k)]
    entry = dict(result[(k, i)])
    entry.update(difference=-entry["difference"], ci_low=-entry["ci_high"], ci_high=-entry["ci_low"])
    return entry


# --- planning --------------------------------------------------------------------------------


def power(difference_: float, seed: float, prompt: float, residual: float, seeds: int, prompts: int,
          level: float = LEVEL, settings: int = 2) -> float:
    """The power of the paired two-sided test (`difference`) to separate two settings that
    differ by `difference_`, with `seeds` seeds each and `prompts` shared prompts, in a sweep of
    `settings` settings (the seed level's degrees of freedom, settings x (seeds - 1)), for the
    variance components seed (sigma_u^2), prompt (the variance over prompts of a pair's
    prompt-wise difference, 2 sigma_sp^2) and residual (sigma_e^2): the test's variance is
    (2 / seeds) (sigma_u^2 + sigma_e^2 / prompts) + prompt / prompts, its df Satterthwaite's;
    noncentral t."""
    from scipy import stats as scipy_stats

    seed_part = 2 / seeds * (seed + residual / prompts)
    prompt_part = prompt / prompts
    variance = seed_part + prompt_part
    if variance <= 0:
        return 1.0
    df = variance ** 2 / (seed_part ** 2 / max(settings * (seeds - 1), 1) + prompt_part ** 2 / max(prompts - 1, 1))
    df = max(df, 1.0)
    critical = scipy_stats.t.ppf((1 + level) / 2, df)
    shift = abs(difference_) / math.sqrt(variance)
    value = float(scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift))
    if not math.isfinite(value):  # scipy's noncentral t fails far out: the normal limit there
        value = float(scipy_stats.norm.sf(critical - shift) + scipy_stats.norm.cdf(-critical - shift))
    return min(1.0, value)


def pair_prompt_variance(tables: Sequence[np.ndarray], parts: Components) -> float:
    """The prompt-by-setting variance of a pair's prompt-wise difference (2 sigma_sp^2), the
    mean over the sweep's pairs of settings, the residual's share taken out."""
    values = []
    for i in range(len(tables)):
        for k in range(i + 1, len(tables)):
            d = tables[i].mean(axis=-2) - tables[k].mean(axis=-2)
            residual = parts.residual * (1 / tables[i].shape[-2] + 1 / tables[k].shape[-2])
            values.append(max(0.0, float(d.var(ddof=1) - residual)))
    return float(np.mean(values)) if values else 0.0


def plan(difference_: float, seed: float, prompt: float, residual: float, level: float = LEVEL,
         target: float = POWER, seed_counts: Sequence[int] = (2, 3, 4, 5, 6, 8, 10, 16),
         max_prompts: int = 100_000, settings: int = 2) -> list[dict[str, Any]]:
    """For each number of seeds per setting, the fewest shared prompts with which the paired
    test separates two settings `difference_` apart with power `target` (None: not with any
    number of prompts up to max_prompts, the seed variance alone being too large).

    Args:
        difference_: the difference to separate, in the figure's units.
        seed, prompt, residual: the variance components (as `power` takes them).
        level: the test's level; target: the power wanted; seed_counts: the seed counts tried.
        max_prompts: the most prompts considered.
        settings: the sweep's number of settings (they pool the seed level).

    Returns:
        One entry per seed count: seeds, prompts (or None) and the power reached.
    """
    rows = []
    for seeds in seed_counts:
        if power(difference_, seed, prompt, residual, seeds, max_prompts, level, settings) < target:
            rows.append({"seeds": seeds, "prompts": None, "power": None})
            continue
        low, high = 2, max_prompts
        while low < high:
            middle = (low + high) // 2
            if power(difference_, seed, prompt, residual, seeds, middle, level, settings) >= target:
                high = middle
            else:
                low = middle + 1
        rows.append({"seeds": seeds, "prompts": low,
                     "power": power(difference_, seed, prompt, residual, seeds, low, level, settings)})
    return rows


def smallest_difference(seed: float, prompt: float, residual: float, seeds: int, prompts: int,
                        level: float = LEVEL, target: float = POWER, settings: int = 2) -> float:
    """The smallest difference the paired test separates with power `target` at `seeds` seeds
    per setting and `prompts` prompts (bisection on `power`)."""
    low, high = 0.0, 1.0
    while power(high, seed, prompt, residual, seeds, prompts, level, settings) < target and high < 1e9:
        low, high = high, high * 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if power(middle, seed, prompt, residual, seeds, prompts, level, settings) < target \
            else (low, middle)
    return high


# --- length control ----------------------------------------------------------------------------

LENGTH_CONTROL = ("length-controlled win rate as AlpacaEval 2 makes it (Dubois et al. 2024, arXiv:2404.04475) "
                  "without its per-prompt difficulty term: a logistic GLM (statsmodels, binomial family, ties as "
                  "outcome 0.5) of the win on tanh(length difference / its standard deviation); the win rate it "
                  "predicts at no length difference, sigmoid(intercept)")


def length_controlled(wins: Sequence[float], lengths: Sequence[float], reference_lengths: Sequence[float]) \
        -> dict[str, Any]:
    """The length-controlled win rate of one set of outcomes.

    Args:
        wins: the outcomes (1 win, 0.5 tie, 0 loss; nan left out).
        lengths: the policy's completion lengths, one per outcome.
        reference_lengths: the reference's, one per outcome.

    Returns:
        win_rate (the raw mean), length_controlled (sigmoid of the intercept of the GLM
        logit(win) = a + b tanh(d / sd(d)), d the length difference), length_coefficient (b)
        and note (why the fit was left out: no length difference, or every outcome alike:
        then the length-controlled rate is the raw one).
    """
    y = np.asarray(wins, dtype=float)
    d = np.asarray(lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    keep = np.isfinite(y) & np.isfinite(d)
    y, d = y[keep], d[keep]
    raw = float(y.mean()) if len(y) else math.nan
    out = {"win_rate": raw, "length_controlled": raw, "length_coefficient": 0.0, "n": len(y), "note": ""}
    if len(y) < 3 or np.all(y == y[0]):
        out["note"] = "every outcome alike: nothing for length to explain"
        return out
    if not d.std() > 0:
        out["note"] = "no length difference: nothing to control"
        return out
    import statsmodels.api as sm

    x = sm.add_constant(np.tanh(d / d.std(ddof=1)))
    import warnings

    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PerfectSeparationWarning)
        try:
            fit = sm.GLM(y, x, family=sm.families.Binomial()).fit()
        except Exception as error:  # noqa: BLE001  (a failed fit is said, not raised)
            out["note"] = f"the length model could not be fit ({type(error).__name__}): the raw rate kept"
            return out
    if any(issubclass(w.category, PerfectSeparationWarning) for w in caught):
        out["note"] = "the length difference alone decides the outcomes (perfect separation)"
    intercept, slope = (float(v) for v in fit.params)
    out.update(length_controlled=float(1 / (1 + math.exp(-intercept))), length_coefficient=slope)
    return out
