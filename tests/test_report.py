"""The sweep report: the per-setting statistics and the best-setting sentence on synthetic jobs,
then tables and a plot written from a real local sweep, and read back."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from PIL import Image

from conftest import run_cli
from rlhf.judge import report
from rlhf.run import rundir
from rlhf.judge import stats

ACC = "eval_rewards/accuracies"


def job(seed, value, status="finished", metric=ACC, kind="dpo", **setting):
    """A job row as report.collect makes it; `setting` with dots as double underscores."""
    overrides = {k.replace("__", "."): str(v) for k, v in setting.items()}
    return {"job": f"{len(overrides)}-{seed}", "overrides": {**overrides, "seed": str(seed)}, "status": status,
            "metrics": {metric: value} if value is not None else {}, "seconds": 1.0, "error": "",
            "kind": kind, "objective": {}}


def judge(rows, metric=ACC):
    swept = sorted(k for k in rows[0]["overrides"] if len({r["overrides"][k] for r in rows}) > 1)
    keys, stats = report.settings(rows, swept, metric)
    return stats, report.best_setting(stats, metric, report.greater_is_better(rows, metric))


@pytest.mark.parametrize("df,t", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042),
                                  (120, 1.980)])
def test_t_quantile_is_the_two_sided_95_percent_point_of_students_t(df, t):
    assert round(stats.t_quantile(df), 3) == t


def test_t_quantile_at_another_level():
    assert round(stats.t_quantile(2, 0.99), 3) == 9.925 and round(stats.t_quantile(10, 0.90), 3) == 1.812


def test_summary_of_three_values_is_mean_sample_std_and_t_interval():
    three = stats.summarize([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert (three["n"], three["mean"], three["std"]) == (3, 2.0, 1.0)
    assert three["ci_low"] == pytest.approx(2 - half, abs=1e-5)
    assert three["ci_high"] == pytest.approx(2 + half, abs=1e-5)
    one = stats.summarize([0.7])
    assert (one["n"], one["mean"], one["std"], one["ci_low"], one["ci_high"]) == (1, 0.7, None, None, None)


def test_a_clearly_better_setting_with_tight_seeds_is_separable():
    rows = [job(s, v, method__beta=0.1) for s, v in zip((1, 2, 3), (0.90, 0.91, 0.92))]
    rows += [job(s, v, method__beta=0.3) for s, v in zip((1, 2, 3), (0.50, 0.52, 0.51))]
    stats, sentence = judge(rows)
    assert [(s["setting"], s["n"]) for s in stats] == [({"method.beta": "0.1"}, 3), ({"method.beta": "0.3"}, 3)]
    assert "mean and 95% CI (Student's t, n=3 seeds)" in sentence and "(higher is better)" in sentence
    assert "method.beta=0.1 is best (0.91, 95% CI [0.8852, 0.9348])" in sentence
    assert "separable from the runner-up method.beta=0.3 (0.51 [0.4852, 0.5348])" in sentence
    assert "the intervals do not overlap" in sentence and "conservative" in sentence
    assert "not separable" not in sentence


def test_overlapping_noisy_settings_are_not_separable():
    rows = [job(s, v, method__beta=0.1) for s, v in zip((1, 2, 3), (0.90, 0.70, 0.95))]
    rows += [job(s, v, method__beta=0.3) for s, v in zip((1, 2, 3), (0.85, 0.60, 0.90))]
    stats, sentence = judge(rows)
    assert "method.beta=0.1 is best (0.85, 95% CI" in sentence
    assert "not separable from method.beta=0.3 (0.7833 [" in sentence and "the intervals overlap" in sentence


def test_one_seed_per_setting_names_the_best_but_judges_nothing():
    rows = [job(1, 0.9, method__beta=0.1), job(1, 0.8, method__beta=0.3)]
    stats, sentence = judge(rows)
    assert [s["note"] for s in stats] == ["one seed: no interval"] * 2
    assert all(s["ci_low"] is None and s["std"] is None for s in stats)
    assert "one seed per setting, so no intervals" in sentence and "method.beta=0.1 is best (0.9" in sentence
    assert "without repeated seeds the difference cannot be judged" in sentence and "95% CI" not in sentence
    header, body = report.settings_table(["method.beta"], stats)
    assert header == ["method.beta", "n", "seeds", "mean", "std", "ci_low", "ci_high", "note"]
    assert body[0] == ["0.1", 1, 1, 0.9, "", "", "", "one seed: no interval"]


def test_settings_that_all_reach_the_same_value_none_is_better():
    rows = [job(s, 1.0, method__beta=b) for b in (0.05, 0.1, 0.3) for s in (1, 2, 3)]
    stats, sentence = judge(rows)
    assert [s["std"] for s in stats] == [0.0] * 3
    assert "all 3 settings have the same mean (1): none is better" in sentence and "is best" not in sentence


def test_a_loss_is_minimised():
    rows = [job(s, v, metric="eval_loss", method__beta=0.1) for s, v in zip((1, 2, 3), (0.30, 0.31, 0.32))]
    rows += [job(s, v, metric="eval_loss", method__beta=0.3) for s, v in zip((1, 2, 3), (0.60, 0.61, 0.62))]
    assert report.greater_is_better(rows, "eval_loss") is False
    stats, sentence = judge(rows, metric="eval_loss")
    assert "(lower is better)" in sentence and "method.beta=0.1 is best (0.31" in sentence
    assert "runner-up method.beta=0.3" in sentence


def test_the_direction_comes_from_the_method_registry_and_the_objective():
    rows = [job(1, 0.5, method__beta=0.1)]
    assert report.greater_is_better(rows, ACC) is True  # dpo: greater_is_better=True
    rows[0]["objective"] = {"metric": None, "direction": "minimize"}  # set for the learning metric
    assert report.greater_is_better(rows, ACC) is False
    rows[0]["objective"] = {"metric": "eval_loss", "direction": "minimize"}  # set for another metric
    assert report.greater_is_better(rows, ACC) is True


def test_failed_seeds_are_left_out_of_the_stats_and_counted():
    rows = [job(1, 0.90, method__beta=0.1), job(2, None, status="failed", method__beta=0.1),
            job(3, 0.94, method__beta=0.1)]
    rows += [job(s, v, method__beta=0.3) for s, v in zip((1, 2, 3), (0.50, 0.52, 0.51))]
    stats, sentence = judge(rows)
    best = stats[0]
    assert (best["n"], best["seeds"], best["note"]) == (2, 3, "2 of 3 seeds finished")
    assert best["mean"] == pytest.approx(0.92)
    assert best["ci_high"] - best["mean"] == pytest.approx(12.706 * math.sqrt(0.0008) / math.sqrt(2), rel=1e-4)
    assert "n=2-3 seeds" in sentence and "method.beta=0.1 is best" in sentence
    rows = [job(s, None, status="failed", method__beta=0.1) for s in (1, 2)]
    rows += [job(s, 0.5, method__beta=0.3) for s in (1, 2)]
    stats, sentence = judge(rows)
    assert stats[0]["note"] == "0 of 2 seeds finished" and stats[0]["mean"] is None
    assert "method.beta=0.3 (0.5, 95% CI [0.5, 0.5]) is the only setting with a finished seed" in sentence
    assert "method.beta=0.1: no seed finished" in sentence


def test_the_plot_draws_each_settings_mean_and_interval_one_line_per_other_key(tmp_path):
    rows = [job(s, 0.5 + 0.1 * b + 0.01 * s, method__beta=b, method__loss_type=lt)
            for b in (0.1, 0.5) for lt in ("hinge", "sigmoid") for s in (1, 2, 3)]
    rows.append(job(1, 0.7, method__beta=1.0, method__loss_type="hinge"))  # one seed: a point, no bar
    swept = ["method.beta", "method.loss_type", "seed"]
    plotted = report.plot(rows, swept, ACC, tmp_path / "p.png", True)
    assert json.loads(Image.open(tmp_path / "p.png").text["rlhf:plotted"]) == plotted
    _, stats = report.settings(rows, swept, ACC)
    lines = {line["label"]: line for line in plotted["lines"]}
    assert set(lines) == {"method.loss_type=hinge", "method.loss_type=sigmoid"}
    for s in stats:
        line = lines[f"method.loss_type={s['setting']['method.loss_type']}"]
        x = float(s["setting"]["method.beta"])
        assert line["y"][line["x"].index(x)] == pytest.approx(s["mean"])
        bars = [b for b in line["errorbars"] if b["x"] == x]
        assert bars == ([] if s["n"] == 1 else [{"x": x, "low": pytest.approx(s["ci_low"]),
                                                 "high": pytest.approx(s["ci_high"])}])
        seeds = sorted(y for sx, y in zip(line["seeds"]["setting_x"], line["seeds"]["y"]) if sx == x)
        assert seeds == pytest.approx(sorted(s["values"]))
        # The dots are jittered around their setting's x, a little: equal values stay apart.
        drawn = [dx for dx, sx in zip(line["seeds"]["x"], line["seeds"]["setting_x"]) if sx == x]
        assert len(set(drawn)) == len(drawn) and all(abs(dx - x) < 0.05 for dx in drawn)


def test_sweep_over_seeds_reports_each_setting_with_its_interval_and_names_the_best(tmp_path):
    sweep = tmp_path / "multirun"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.05,0.5", "seed=1,2,3", "method.max_steps=4",
            "evaluate.enabled=false",  # no generation scores: the report ranks by the method's metric
            cwd=tmp_path)
    # Written at the end of the multirun; the command writes it again on demand.
    assert (sweep / "report.png").is_file()
    (sweep / "report.png").unlink()
    out = run_cli("rlhf.report", str(sweep), cwd=tmp_path).stdout
    assert "report.png" in out and "report_settings.csv" in out
    with open(sweep / "report.csv") as f:
        jobs = list(csv.DictReader(f))
    assert len(jobs) == 6 and {r["status"] for r in jobs} == {"finished"}
    assert set(jobs[0]) >= {"method.beta", "seed", ACC, "seconds"}
    # In job order, each row naming its job's dir (<number>_<overrides>).
    assert [r["job"] for r in jobs] == [str(n) for n in range(6)]
    assert all(r["dir"].startswith(f"{r['job']}_") and f"method.beta={r['method.beta']}," in r["dir"]
               for r in jobs), [r["dir"] for r in jobs]
    assert all((sweep / r["dir"] / "SUCCESS").is_file() for r in jobs)
    with open(sweep / "report_settings.csv") as f:
        settings = {r["method.beta"]: r for r in csv.DictReader(f)}
    assert set(settings) == {"0.05", "0.5"} and {(r["n"], r["seeds"]) for r in settings.values()} == {("3", "3")}
    # Each setting's figures, recomputed here from the job table with the t table's 4.303.
    for beta, row in settings.items():
        values = [float(r[ACC]) for r in jobs if r["method.beta"] == beta]
        mean = sum(values) / 3
        half = 4.303 * math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
        assert float(row["mean"]) == pytest.approx(mean)
        assert float(row["ci_low"]) == pytest.approx(mean - half, abs=1e-4)
        assert float(row["ci_high"]) == pytest.approx(mean + half, abs=1e-4)
    # The sentence names the setting with the higher mean (or says none is better), printed and in report.md.
    sentence = out.strip().splitlines()[-1]
    best, runner = sorted(settings, key=lambda b: -float(settings[b]["mean"]))
    assert sentence.startswith(f"By {ACC} (higher is better), mean and 95% CI (Student's t, n=3 seeds): ")
    if settings[best]["mean"] == settings[runner]["mean"]:
        assert "none is better" in sentence
    else:
        assert f"method.beta={best} is best ({float(settings[best]['mean']):.4g}, 95% CI [" in sentence
        overlap = (float(settings[best]["ci_low"]) <= float(settings[runner]["ci_high"])
                   and float(settings[runner]["ci_low"]) <= float(settings[best]["ci_high"]))
        assert (f"not separable from method.beta={runner}" in sentence) == overlap
        assert (f"separable from the runner-up method.beta={runner}" in sentence) == (not overlap)
    markdown = (sweep / "report.md").read_text()
    assert "6 jobs: 6 finished" in markdown and sentence in markdown
    assert "| method.beta | n | seeds | mean | std | ci_low | ci_high | note |" in markdown
    assert "| method.beta | seed | status |" in markdown  # the job table, beside it
    # The plot: one line of the two means, their intervals as error bars, each seed as a dot.
    image = Image.open(sweep / "report.png")
    assert image.size == (700, 450)
    plotted = json.loads(image.text["rlhf:plotted"])
    assert plotted["metric"] == ACC and plotted["x"] == "method.beta" and len(plotted["lines"]) == 1
    line = plotted["lines"][0]
    assert line["x"] == [0.05, 0.5]
    assert line["y"] == pytest.approx([float(settings[b]["mean"]) for b in ("0.05", "0.5")])
    assert line["errorbars"] == [{"x": float(b), "low": pytest.approx(float(settings[b]["ci_low"])),
                                  "high": pytest.approx(float(settings[b]["ci_high"]))} for b in ("0.05", "0.5")]
    assert sorted(zip(line["seeds"]["setting_x"], line["seeds"]["y"])) == sorted(
        (float(r["method.beta"]), float(r[ACC])) for r in jobs)
    assert plotted["horizontal_line"] is None  # not a win rate: no line at 0.5


def test_report_lists_a_failed_job_with_its_error(tmp_path):
    import shutil

    from rlhf.assets import asset_path

    shutil.copy(asset_path("data/topics_pairs.train.jsonl"), tmp_path / "good.jsonl")
    # Valid rows (a bad row would stop the sweep before any job), all longer than method.max_length:
    # only the job, with the tokenizer, finds that the length rule leaves none to train on.
    (tmp_path / "broken.jsonl").write_text(json.dumps({"question": "q", "chosen": "mango " * 400, "rejected": "b"})
                                           + "\n")
    sweep = tmp_path / "multirun"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={tmp_path / 'broken.jsonl'},{tmp_path / 'good.jsonl'}", "dataset.eval=[]",
                   "method.max_steps=2", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "1 job(s) of the sweep did not finish" in proc.stderr
    with open(sweep / "report.csv") as f:
        table = {r["job"]: r for r in csv.DictReader(f)}
    assert table["0"]["status"] == "failed" and "no training rows are left from" in table["0"]["error"]
    assert "broken.jsonl" in table["0"]["error"]
    assert table["1"]["status"] == "finished"
    # A path value keeps its file name; brackets and slashes never reach the dir name.
    assert table["0"]["dir"].startswith("0_dataset.eval=_,dataset.path=broken.jsonl,method.max_steps=2-")
    assert table["1"]["dir"].startswith("1_dataset.eval=_,dataset.path=good.jsonl,method.max_steps=2-")
    assert {p.name for p in sweep.iterdir() if p.is_dir()} == {table["0"]["dir"], table["1"]["dir"]}


def test_report_of_a_directory_that_is_missing_a_file_or_no_sweep_says_which(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("")
    for target, message in ((tmp_path / "nope", f"{tmp_path / 'nope'} does not exist"),
                            (tmp_path / "file.txt", f"{tmp_path / 'file.txt'} is a file, not a sweep directory"),
                            (tmp_path / "empty", f"{tmp_path / 'empty'} is not a sweep directory (no job")):
        proc = run_cli("rlhf.report", str(target), cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("error:") == 1 and message in proc.stderr, proc.stderr


def test_a_sweep_that_scored_generations_is_judged_on_them(tmp_path):
    """2 settings x 3 seeds of the embedded DPO task, whose generation eval stage is on: the
    report ranks by the win rate against the reference, with intervals over seeds recomputed
    here from the jobs' own metrics.json, error bars and a reward-against-KL plot, and the
    reference's completions were generated by one job and reused by the five others."""
    sweep, cache = tmp_path / "multirun", tmp_path / "cache"
    out = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={cache}", "method.beta=0.1,0.5",
                  "seed=1,2,3", "method.max_steps=30", cwd=tmp_path)
    log = out.stdout + out.stderr
    assert log.count("reference completions computed") == 1 and log.count("reference completions reused") == 5
    blocks = {}
    for job in rundir.job_dirs(sweep):
        config = yaml.safe_load((job / "config.yaml").read_text())
        blocks[(config["method"]["beta"], config["seed"])] = json.loads((job / "metrics.json").read_text())["generation"]
    assert sorted(b["reference"]["completions"] for b in blocks.values()) == ["computed"] + ["reused"] * 5
    assert len({b["reference"]["cache"] for b in blocks.values()}) == 1
    assert len(list((cache / "generations").glob("*/completions.jsonl"))) == 1
    # Every job judged the same reference completions: the reference's own scores are equal.
    assert len({json.dumps(b["metrics"]["reference/topic_reward"]) for b in blocks.values()}) == 1

    markdown = (sweep / "report.md").read_text()
    assert "Metric: `generation/win_rate` (higher is better)" in markdown
    with open(sweep / "report_settings.csv") as f:
        settings = {r["method.beta"]: r for r in csv.DictReader(f)}
    # Each setting's figure over seeds and prompts, recomputed here from the jobs' completions.jsonl
    # (the two-level model of rlhf.judge.stats), inside [0, 1].
    import numpy as np

    tables = {}
    for job in rundir.job_dirs(sweep):
        beta = str(yaml.safe_load((job / "config.yaml").read_text())["method"]["beta"])
        lines = [json.loads(x) for x in (job / "completions.jsonl").read_text().splitlines() if x.strip()]
        tables.setdefault(beta, []).append([x["win"] for x in sorted(lines, key=lambda x: x["prompt_index"])])
    tables = {beta: np.array(t) for beta, t in tables.items()}
    parts = stats.components(list(tables.values()))
    for beta, row in settings.items():
        values = [b["metrics"]["win_rate"] for (bt, _), b in blocks.items() if str(bt) == beta]
        expected = stats.interval(tables[beta], parts, bounds=(0.0, 1.0))
        assert (int(row["n"]), float(row["mean"])) == (3, pytest.approx(sum(values) / 3))
        assert float(row["ci_low"]) == pytest.approx(expected["ci_low"])
        assert float(row["ci_high"]) == pytest.approx(expected["ci_high"])
        assert 0 <= float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"]) <= 1
    sentence = report.verdict(sweep)
    assert sentence.startswith("By generation/win_rate (higher is better), mean over seeds and prompts and its 95% CI "
                               "from both levels (n=3 seeds x 60 prompts; two-level mixed model)"), sentence
    assert "Holm-adjusted over the 1 pair" in sentence
    assert sentence in markdown
    assert (sweep / "report_comparisons.csv").is_file() and "## Paired comparisons" in markdown
    # The Generations table: each generation figure per setting, with its interval over seeds.
    assert "| method.beta | win_rate | length_controlled_win_rate | topic_reward | kl | length | finished | empty |" \
        in markdown
    kl_01 = stats.summarize([b["metrics"]["kl"] for (bt, _), b in blocks.items() if bt == 0.1])
    assert f"{kl_01['mean']:.4g} [" in markdown
    # Completions side by side: the reference's and each setting's answer to the first prompts.
    assert "| prompt | reference | method.beta=0.1 | method.beta=0.5 |" in markdown
    # The metric plot draws the win rate with error bars; the frontier, reward against KL.
    plotted = json.loads(Image.open(sweep / "report.png").text["rlhf:plotted"])
    assert plotted["metric"] == "generation/win_rate" and len(plotted["lines"][0]["errorbars"]) == 2
    assert plotted["horizontal_line"] == 0.5
    frontier = json.loads(Image.open(sweep / "report_frontier.png").text["rlhf:plotted"])
    assert frontier["reward"] == "generation/topic_reward" and len(frontier["points"]) == 2
    for point in frontier["points"]:
        beta = float(point["label"].split("=")[1])
        kls = [b["metrics"]["kl"] for (bt, _), b in blocks.items() if bt == beta]
        assert point["kl"] == pytest.approx(sum(kls) / 3) and len(point["seeds"]) == 3
        assert point["kl_ci"][0] < point["kl"] < point["kl_ci"][1]
    assert frontier["reference"] == pytest.approx(blocks[(0.1, 1)]["metrics"]["reference/topic_reward"])
