"""The sweep report's paired analysis on sweep dirs written here, as jobs leave them
(overrides, config.yaml, metrics.json's generation block, completions.jsonl, SUCCESS), with
outcomes drawn from a known model: no training, a few seconds. The same report on real jobs is
in test_report.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli
from PIL import Image

from rlhf.judge import report, stats
from rlhf.run import rundir

PROMPTS = 60
DECODING = {"batch_size": 16, "max_new_tokens": 16, "samples_per_prompt": 1, "seed": 0, "temperature": 0.7,
            "top_p": 1.0}


def write_job(sweep: Path, number: int, overrides: dict[str, str], wins, lengths=None, reference_lengths=None,
              completions=None, decoding=None, categories=None) -> Path:
    """One finished job's run dir: per prompt its win outcome (and length, reference length,
    completion text), the generation block's figures computed from them as the stage does."""
    lengths = [10] * len(wins) if lengths is None else lengths
    reference_lengths = [10] * len(wins) if reference_lengths is None else reference_lengths
    completions = [f"answer {i}" for i in range(len(wins))] if completions is None else completions
    job = sweep / (f"{number}_" + ",".join(f"{k}={v}" for k, v in overrides.items()))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (job / "config.yaml").write_text(yaml.safe_dump({"method": {"kind": "dpo"}, "objective": {}}))
    rows = []
    for i, (win, length, ref, text) in enumerate(zip(wins, lengths, reference_lengths, completions)):
        prompt = [{"role": "user", "content": f"prompt {i}"}]
        rows.append({"prompt_index": i, "sample": 0, "prompt": prompt, "completion": text, "tokens": int(length),
                     "finished": False, "scores": {"judge": float(win)}, "kl": 1.0,
                     "reference_completion": f"reference {i}", "reference_tokens": int(ref),
                     "reference_scores": {"judge": 0.5}, "win": float(win),
                     "columns": {"category": categories[i]} if categories else {}})
    (job / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    controlled = stats.length_controlled(wins, lengths, reference_lengths)
    metrics = {"win_rate": float(np.mean(wins)), "length_controlled_win_rate": controlled["length_controlled"],
               "judge": float(np.mean(wins)), "kl": 1.0, "length": float(np.mean(lengths)), "finished": 0.0,
               "empty": float(np.mean([not t.strip() for t in completions])), "reference/judge": 0.5,
               "reference/length": float(np.mean(reference_lengths))}
    generation = {"metrics": metrics, "decoding": decoding or DECODING, "prompts": {"count": len(wins)},
                  "scorers": [{"name": "judge"}], "win_rate": {"judge": "judge"}, "completions": "completions.jsonl"}
    (job / "metrics.json").write_text(json.dumps({"generation": generation, "metric": "eval_loss"}))
    rundir.mark_success(job)
    return job


def simulated_sweep(sweep: Path, rng, shifts: dict[str, float], seeds=(1, 2, 3), seed_sd=0.2) -> dict:
    """A beta sweep: per setting and seed, 0/1 outcomes from latent = shift + prompt + seed +
    noise (the prompts shared by every job); returns {(beta, seed): wins}."""
    prompt = rng.normal(0, 1.0, PROMPTS)
    out, number = {}, 0
    for beta, shift in shifts.items():
        for seed in seeds:
            latent = shift + prompt + rng.normal(0, seed_sd) + rng.normal(0, 1.0, PROMPTS)
            wins = (latent > 0).astype(float)
            write_job(sweep, number, {"method.beta": beta, "seed": str(seed)}, wins)
            out[(beta, seed)] = wins
            number += 1
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def overlap_separations(jobs: dict) -> set[tuple[str, str]]:
    """Today's rule: the pairs of settings whose Student-t intervals over seed means do not overlap."""
    betas = sorted({b for b, _ in jobs})
    figures = {b: stats.summarize([float(np.mean(w)) for (bb, _), w in jobs.items() if bb == b]) for b in betas}
    return {(a, b) for i, a in enumerate(betas) for b in betas[i + 1:]
            if figures[a]["ci_low"] > figures[b]["ci_high"] or figures[b]["ci_low"] > figures[a]["ci_high"]}


def test_a_clearly_better_setting_is_better_than_every_other_paired_and_holm_adjusted(tmp_path):
    jobs = simulated_sweep(tmp_path, np.random.default_rng(1), {"0.05": 0.0, "0.1": 1.5, "0.3": 0.0, "0.5": -0.2})
    paths = report.write(tmp_path)
    sentence = report.verdict(tmp_path)
    assert "method.beta=0.1 has the best mean" in sentence
    assert "is better than every other setting (paired, Holm-adjusted, 95%)" in sentence, sentence
    assert "Holm-adjusted over the 6 pairs" in sentence and "n=3 seeds x 60 prompts" in sentence
    table = {r["method.beta"]: r for r in read_csv(paths["comparisons"])}
    assert table["0.1"]["difference_to_best"] == "best"
    for beta in ("0.05", "0.3", "0.5"):
        row = table[beta]
        expected = np.mean([np.mean(w) for (b, _), w in jobs.items() if b == beta]) - \
            np.mean([np.mean(w) for (b, _), w in jobs.items() if b == "0.1"])
        assert float(row["difference_to_best"]) == pytest.approx(expected)
        assert float(row["diff_ci_low"]) <= expected <= float(row["diff_ci_high"]) < 0
        assert float(row["p"]) <= float(row["p_holm"]) <= 0.05 and row["separable"] == "yes"
    markdown = (tmp_path / "report.md").read_text()
    assert "## Paired comparisons" in markdown and sentence in markdown and "Holm" in markdown
    # Any two settings: every pair in report_pairs.csv, the same figures as against the best.
    pairs = read_csv(paths["pairs"])
    assert len(pairs) == 6
    against_best = {(r["a:method.beta"], r["b:method.beta"]): r for r in pairs}
    row = against_best.get(("0.05", "0.1"))
    assert float(row["difference"]) == pytest.approx(float(table["0.05"]["difference_to_best"]))
    assert float(row["p_holm"]) == pytest.approx(float(table["0.05"]["p_holm"]))
    # The frontier marks the best setting and those separable from it; the win-rate plot draws 0.5.
    frontier = json.loads(Image.open(paths["frontier"]).text["rlhf:plotted"])
    assert {p["label"]: p["mark"] for p in frontier["points"]} == {
        "method.beta=0.1": "best", "method.beta=0.05": "separable", "method.beta=0.3": "separable",
        "method.beta=0.5": "separable"}
    assert json.loads(Image.open(paths["png"]).text["rlhf:plotted"])["horizontal_line"] == 0.5


def test_the_paired_rule_separates_at_least_what_interval_overlap_does_and_in_the_means_direction(tmp_path):
    """Over 10 simulated 4 x 3 sweeps with settings a little apart: every pair the overlap of
    the seeds' t intervals separates, the paired rule separates too (or more), and each of its
    separations has the sign of the means' difference."""
    rng = np.random.default_rng(4)
    paired_total, overlap_total = 0, 0
    for k in range(10):
        sweep = tmp_path / str(k)
        jobs = simulated_sweep(sweep, rng, {"0.05": 0.0, "0.1": 0.5, "0.3": 0.25, "0.5": -0.25}, seed_sd=0.1)
        rows, swept, metric = report.collect(sweep)
        keys, settings = report.settings(rows, swept, metric)
        analysis = report.two_level(rows, keys, metric, [])
        separated = set()
        for (i, j), entry in analysis["pairs"].items():
            a, b = analysis["settings"][i][0], analysis["settings"][j][0]
            if entry["separable"]:
                separated.add(tuple(sorted((a, b))))
                means = {s["setting"]["method.beta"]: s["mean"] for s in settings}
                assert np.sign(entry["difference"]) == np.sign(means[a] - means[b])
        overlap = overlap_separations(jobs)
        paired_total, overlap_total = paired_total + len(separated), overlap_total + len(overlap)
    print(f"pairs separated over 10 sweeps: paired {paired_total}, interval overlap {overlap_total}")
    assert paired_total >= overlap_total and paired_total > 0


def test_two_seeds_give_intervals_inside_0_1_in_every_table_and_plot(tmp_path):
    """The issue's case: 2 settings x 2 seeds, one seed far from the other, win rates near 1:
    Student's t with one degree of freedom over the seed means leaves [0, 1]; the report's
    intervals of the win rates and shares stay inside, in report_settings.csv, report.md and
    the plots."""
    rng = np.random.default_rng(0)
    number = 0
    seed_means = {"0.05": (0.97, 0.6), "0.1": (0.9, 0.8)}
    for beta, means in seed_means.items():
        for seed, mean in zip((1, 2), means):
            wins = (rng.uniform(size=PROMPTS) < mean).astype(float)
            texts = ["" if rng.uniform() < 0.05 else "text" for _ in range(PROMPTS)]
            write_job(tmp_path, number, {"method.beta": beta, "seed": str(seed)}, wins,
                      lengths=rng.integers(5, 16, PROMPTS), reference_lengths=rng.integers(5, 16, PROMPTS),
                      completions=texts)
            number += 1
    seed_t = stats.summarize([0.97, 0.6])
    assert seed_t["ci_high"] > 1  # what today's rule would draw
    paths = report.write(tmp_path)
    for row in read_csv(paths["settings"]):
        assert 0 <= float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"]) <= 1, row
    markdown = (tmp_path / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method.beta | win_rate"))
    names = [c.strip() for c in header.strip("|").split("|")]
    shares = [n for n in names if n in ("win_rate", "length_controlled_win_rate", "finished", "empty")]
    assert {"win_rate", "length_controlled_win_rate", "empty"} <= set(shares)
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith(("| 0.05 |", "| 0.1 |")):
            if len(cells) != len(names) or "[" not in cells[1]:
                continue  # not a row of the Generations table
            for name in shares:
                mean, low, high = (float(v) for v in cells[names.index(name)].replace("[", "").replace("]", "")
                                   .replace(",", "").split())
                assert 0 <= low <= mean <= high <= 1, (name, cells)
    if "(empty completion)" not in markdown:  # an empty answer among the first prompts is shown as such
        assert all("|  |" not in line for line in markdown.split("### What was generated")[1].split("## Jobs")[0]
                   .splitlines())
    plotted = json.loads(Image.open(paths["png"]).text["rlhf:plotted"])
    for line in plotted["lines"]:
        for bar in line["errorbars"]:
            assert 0 <= bar["low"] <= bar["high"] <= 1, bar


def test_jobs_that_decoded_differently_fall_back_to_the_seeds_only_rule_and_say_so(tmp_path):
    rng = np.random.default_rng(2)
    for number, (beta, seed) in enumerate((("0.1", 1), ("0.1", 2), ("0.5", 1), ("0.5", 2))):
        decoding = {**DECODING, "seed": 1} if number == 3 else None
        write_job(tmp_path, number, {"method.beta": beta, "seed": str(seed)},
                  (rng.uniform(size=PROMPTS) < 0.6).astype(float), decoding=decoding)
    sentence = report.verdict(tmp_path)
    assert "Not compared prompt by prompt: the jobs did not decode with the same settings and seed" in sentence
    assert "Student's t, n=2 seeds" in sentence and "Holm" not in sentence
    report.write(tmp_path)
    assert not (tmp_path / "report_comparisons.csv").exists()


def test_a_length_rewarding_judge_makes_raw_and_length_controlled_win_rates_disagree(tmp_path):
    """Setting 0.5 wins by writing longer (its judge counts length); setting 0.1 wins more at
    equal length: the raw win rate names 0.5, the length-controlled one 0.1, and the report
    says length may be driving the win rate."""
    rng = np.random.default_rng(3)
    number = 0
    for beta in ("0.1", "0.5"):
        for seed in (1, 2, 3):
            reference = rng.integers(8, 12, PROMPTS)
            if beta == "0.5":
                lengths = reference + rng.integers(-2, 8, PROMPTS)
                wins = np.where(lengths > reference, 1.0, np.where(lengths == reference, 0.5, 0.0))
            else:
                lengths = reference.copy()
                wins = (rng.uniform(size=PROMPTS) < 0.65).astype(float)
            write_job(tmp_path, number, {"method.beta": beta, "seed": str(seed)}, wins, lengths=lengths,
                      reference_lengths=reference)
            number += 1
    rows, swept, _ = report.collect(tmp_path)
    _, raw = report.settings(rows, swept, report.WIN_RATE)
    _, controlled = report.settings(rows, swept, report.LC)
    assert raw[1]["mean"] > raw[0]["mean"] and controlled[0]["mean"] > controlled[1]["mean"]
    sentence = report.verdict(tmp_path)
    assert "length may be driving the win rate" in sentence
    assert "The raw win rate names method.beta=0.5 best" in sentence
    assert "the length-controlled win rate method.beta=0.1" in sentence


def test_length_control_of_a_judge_that_only_counts_length_is_a_tie_and_of_one_that_ignores_it_the_raw_rate():
    rng = np.random.default_rng(0)
    reference = rng.integers(5, 30, 400)
    policy = reference + rng.integers(-3, 15, 400)
    by_length = np.where(policy > reference, 1.0, np.where(policy == reference, 0.5, 0.0))
    counted = stats.length_controlled(by_length, policy, reference)
    assert counted["win_rate"] > 0.75 and counted["length_controlled"] == pytest.approx(0.5, abs=0.02)
    fair = (rng.uniform(size=400) < 0.7).astype(float)
    ignored = stats.length_controlled(fair, policy, reference)
    assert ignored["length_controlled"] == pytest.approx(ignored["win_rate"], abs=0.05)
    same = stats.length_controlled(fair, reference, reference)
    assert same["length_controlled"] == same["win_rate"] and "no length difference" in same["note"]


def test_a_category_whose_completions_are_all_empty_is_flagged_while_the_average_rises(tmp_path):
    """Setting 0.5 wins more often on average, but answers every `colour` prompt with an empty
    completion and loses there: the report gives each figure per category, says the colour
    answers of 0.5 are all empty and that 0.5 is worse than 0.1 on them; the empty answers are
    shown as such."""
    rng = np.random.default_rng(8)
    categories = ["colour" if i % 4 == 0 else ("animal" if i % 4 == 1 else "tool") for i in range(PROMPTS)]
    colour = np.array([c == "colour" for c in categories])
    number = 0
    for beta in ("0.1", "0.5"):
        for seed in (1, 2, 3):
            if beta == "0.5":
                wins = np.where(colour, 0.0, 1.0)
                texts = ["" if c else "answer" for c in colour]
            else:
                wins = (rng.uniform(size=PROMPTS) < 0.6).astype(float)
                texts = ["answer"] * PROMPTS
            write_job(tmp_path, number, {"method.beta": beta, "seed": str(seed)}, wins, completions=texts,
                      categories=categories)
            number += 1
    sentence = report.verdict(tmp_path)
    assert "method.beta=0.5 has the best mean" in sentence
    assert "In category=colour, every completion of method.beta=0.5 is empty" in sentence
    assert "In category=colour, method.beta=0.5 (best on average) is worse than method.beta=0.1" in sentence
    assert "category=animal, every" not in sentence
    report.write(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## By category")[1].split("\n## ")[0]
    assert "| category | method.beta | win_rate | judge | kl | length | finished | empty |" in section
    assert "| colour | 0.5 | 0 [0, " in section and "| animal | 0.5 | 1 [" in section
    colour = next(line for line in section.splitlines() if line.startswith("| colour | 0.5 |"))
    win_rate = colour.split("|")[3].replace("[", " ").replace("]", " ").replace(",", " ").split()
    assert [float(v) for v in win_rate][0] == 0 and 0 < float(win_rate[2]) < 0.3  # all lost: [0, small], not [0, 1]
    examples = markdown.split("### What was generated")[1].split("\n## ")[0]
    assert "(empty completion)" in examples  # prompt 0 is a colour prompt: 0.5's answer is empty


def test_plan_prints_the_prompts_each_number_of_seeds_needs_from_the_measured_components(tmp_path):
    simulated_sweep(tmp_path / "sweep", np.random.default_rng(6), {"0.05": 0.0, "0.1": 0.3, "0.3": 0.1})
    out = run_cli("rlhf.report", str(tmp_path / "sweep"), "--plan", "0.1", cwd=tmp_path).stdout
    assert out.startswith("Plan for generation/win_rate: ") and "apart with 80% power in a sweep of 3 settings" in out
    rows, swept, metric = report.collect(tmp_path / "sweep")
    analysis = report.two_level(rows, [k for k in swept if k != "seed"], metric, [])
    parts = report.measured_components(analysis)
    expected = stats.plan(0.1, parts["seed"], parts["prompt"], parts["residual"], settings=3)
    table = [line.split() for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert [int(t[0]) for t in table] == [r["seeds"] for r in expected]
    assert [None if t[1] == "-" else int(t[1]) for t in table] == [r["prompts"] for r in expected]
    prompts = [r["prompts"] for r in expected if r["prompts"]]
    assert prompts == sorted(prompts, reverse=True)  # more seeds, fewer prompts
    assert not (tmp_path / "sweep" / "report.md").exists()  # --plan only prints


def test_scorers_that_name_different_best_settings_are_said(tmp_path):
    rng = np.random.default_rng(12)
    for number, (beta, seed) in enumerate((b, s) for b in ("0.1", "0.5") for s in (1, 2, 3)):
        wins = (rng.uniform(size=PROMPTS) < (0.8 if beta == "0.1" else 0.4)).astype(float)
        job = write_job(tmp_path, number, {"method.beta": beta, "seed": str(seed)}, wins)
        metrics = json.loads((job / "metrics.json").read_text())
        metrics["generation"]["metrics"]["other_scorer"] = 0.9 if beta == "0.5" else 0.1
        (job / "metrics.json").write_text(json.dumps(metrics))
    sentence = report.verdict(tmp_path)
    assert ("The scorers rank the settings differently: by generation/win_rate method.beta=0.1 is best, by "
            "generation/other_scorer method.beta=0.5.") in sentence


def test_jobs_without_completions_keep_the_seeds_only_rule_with_intervals_cut_at_0_1(tmp_path):
    """Jobs of an older run (no completions.jsonl): the seeds-only rule, said, and Student's t over
    two seed means cut at the win rate's range, with a note."""
    for number, (beta, seed, mean) in enumerate((("0.1", 1, 0.97), ("0.1", 2, 0.6), ("0.5", 1, 0.5),
                                                 ("0.5", 2, 0.55))):
        job = write_job(tmp_path, number, {"method.beta": beta, "seed": str(seed)},
                        np.array([1.0] * round(mean * PROMPTS) + [0.0] * (PROMPTS - round(mean * PROMPTS))))
        (job / "completions.jsonl").unlink()
    sentence = report.verdict(tmp_path)
    assert "Not compared prompt by prompt: jobs 0, 1, 2, 3 left no completions.jsonl" in sentence, sentence
    paths = report.write(tmp_path)
    rows = {r["method.beta"]: r for r in read_csv(paths["settings"])}
    assert float(rows["0.1"]["ci_high"]) == 1.0 and "interval cut at the figure's range" in rows["0.1"]["note"]
    assert all(0 <= float(r["ci_low"]) <= float(r["ci_high"]) <= 1 for r in rows.values())
