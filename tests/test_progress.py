"""The one-line progress record: its text and ETA from a fake clock, and a real run's train.log."""

from __future__ import annotations

import re

from conftest import read_history, train
from rlhf.core.text import duration
from rlhf.job.progress import Progress


def test_progress_lines_show_position_loss_metric_rate_and_eta():
    progress = Progress("eval_rewards/accuracies", window=2)
    progress.start(0, now=100.0)
    # 10 steps in 5 s: 2 steps/s, 110 steps left.
    assert progress.line({"loss": 0.41234, "learning_rate": 1e-6}, step=10, total=120, now=105.0) == \
        "step 10/120 (8%) | loss 0.4123 | 2 steps/s | ETA 0:00:55"
    # An eval line of its own; its metric is shown on the train lines after it.
    assert progress.line({"eval_loss": 0.3121, "eval_rewards/accuracies": 0.97, "eval_runtime": 2.1,
                          "epoch": 0.5}, step=10, total=120, now=107.0) == \
        "eval at step 10/120 | eval_loss 0.3121 | eval_rewards/accuracies 0.97 | 2.1 s"
    assert progress.line({"loss": 0.4}, step=20, total=120, now=110.0) == \
        "step 20/120 (16%) | loss 0.4 | eval_rewards/accuracies 0.97 | 2 steps/s | ETA 0:00:50"
    # The rate follows the last `window` logging steps: it slowed to 1 step/s, the start drops out.
    progress.line({"loss": 0.39}, step=30, total=120, now=120.0)
    assert progress.line({"loss": 0.38}, step=40, total=120, now=130.0) == \
        "step 40/120 (33%) | loss 0.38 | eval_rewards/accuracies 0.97 | 1 steps/s | ETA 0:01:20"
    assert progress.line({"train_runtime": 65.2, "train_loss": 0.45, "train_steps_per_second": 1.84,
                          "total_flos": 1.0}, step=120, total=120, now=190.0) == \
        "training ended at step 120/120 after 0:01:05 | train_loss 0.45 | 1.84 steps/s"


def test_slow_steps_read_as_seconds_per_step_and_long_etas_as_hours():
    progress = Progress("reward")
    progress.start(100, now=0.0)  # resumed at step 100
    line = progress.line({"loss": 0.0, "reward": 0.25}, step=101, total=5000, now=40.0)
    assert line == "step 101/5000 (2%) | loss 0 | reward 0.25 | 40 s/step | ETA 2 days, 6:26:00"
    assert duration(3599.6) == "1:00:00" and duration(-3) == "0:00:00"


def test_first_log_before_any_rate_has_no_eta():
    progress = Progress("eval_rewards/accuracies")
    assert progress.line({"loss": 0.6931}, step=1, total=6, now=5.0) == "step 1/6 (16%) | loss 0.6931"


LINE = re.compile(r"step (\d+)/(\d+) \((\d+)%\) \| loss (\S+) \|.* \| ETA (\d+:\d\d:\d\d)$")


def test_a_run_logs_one_progress_line_per_logging_step_and_no_raw_dicts(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(tmp_path, "method.max_steps=6", "method.logging_steps=2", run_dir=run_dir)
    log = (run_dir / "train.log").read_text()
    lines = [match for line in log.splitlines() if (match := LINE.search(line))]
    logged = {h["step"]: h["loss"] for h in read_history(run_dir) if "loss" in h}
    # logging_first_step: step 1, then every second step; each line has an ETA.
    assert [int(m[1]) for m in lines] == sorted(logged) == [1, 2, 4, 6]
    assert {m[2] for m in lines} == {"6"} and [m[3] for m in lines] == ["16", "33", "66", "100"]
    assert [float(m[4]) for m in lines] == [float(f"{logged[int(m[1])]:.4g}") for m in lines]
    assert lines[-1][5] == "0:00:00"
    assert "eval at step 6/6 | eval_loss" in log and "training ended at step 6/6 after" in log
    # transformers' raw log dicts are gone, from the job log and from what a batch system keeps.
    for text in (log, proc.stdout, proc.stderr):
        assert "{'loss'" not in text and "'train_runtime'" not in text and "{'eval_loss'" not in text
