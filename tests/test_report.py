"""The sweep report: the per-setting statistics and the best-setting sentence on synthetic jobs,
then tables and a plot written from a real local sweep, and read back."""

from __future__ import annotations

import csv
import json
import math

import pytest
from PIL import Image

from conftest import run_cli
from rlhf import report

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
    assert round(report.t_quantile(df), 3) == t


def test_t_quantile_at_another_level():
    assert round(report.t_quantile(2, 0.99), 3) == 9.925 and round(report.t_quantile(10, 0.90), 3) == 1.812


def test_summary_of_three_values_is_mean_sample_std_and_t_interval():
    stats = report.summarize([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert (stats["n"], stats["mean"], stats["std"]) == (3, 2.0, 1.0)
    assert stats["ci_low"] == pytest.approx(2 - half, abs=1e-5)
    assert stats["ci_high"] == pytest.approx(2 + half, abs=1e-5)
    one = report.summarize([0.7])
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


def test_sweep_report_table_and_plot_match(tmp_path):
    sweep = tmp_path / "multirun"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.1,0.5", "method.loss_type=sigmoid,hinge", "method.max_steps=8", cwd=tmp_path)
    # Written at the end of the multirun; the command writes it again on demand.
    assert (sweep / "report.png").is_file()
    (sweep / "report.png").unlink()
    out = run_cli("rlhf.report", str(sweep), cwd=tmp_path).stdout
    assert "report.png" in out
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {r["status"] for r in table} == {"finished"}
    assert set(table[0]) >= {"method.beta", "method.loss_type", "eval_rewards/accuracies", "seconds"}
    image = Image.open(sweep / "report.png")
    assert image.size == (700, 450)
    plotted = json.loads(image.text["rlhf:plotted"])
    assert plotted["metric"] == "eval_rewards/accuracies" and plotted["x"] == "method.beta"
    drawn = {(line["label"], x, y) for line in plotted["lines"] for x, y in zip(line["x"], line["y"])}
    expected = {(f"method.loss_type={r['method.loss_type']}", float(r["method.beta"]),
                 float(r["eval_rewards/accuracies"])) for r in table}
    assert drawn == expected
    markdown = (sweep / "report.md").read_text()
    assert "4 jobs: 4 finished" in markdown and "| method.beta |" in markdown


def test_report_lists_a_failed_job_with_its_error(tmp_path):
    import shutil

    from rlhf.assets import asset_path

    shutil.copy(asset_path("data/topics_pairs.train.jsonl"), tmp_path / "good.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"question": "q", "chosen": "a", "rejected": "b"}\n{"question": \n')
    sweep = tmp_path / "multirun"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={tmp_path / 'broken.jsonl'},{tmp_path / 'good.jsonl'}", "dataset.eval=[]",
                   "method.max_steps=2", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "1 job(s) of the sweep did not finish" in proc.stderr
    with open(sweep / "report.csv") as f:
        table = {r["job"]: r for r in csv.DictReader(f)}
    assert table["0"]["status"] == "failed" and "broken.jsonl:2: not valid JSON" in table["0"]["error"]
    assert table["1"]["status"] == "finished"
