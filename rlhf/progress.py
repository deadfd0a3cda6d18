"""One line per logging step, for log files and batch output: where training is, when it ends.

    step 40/120 (33%) | loss 0.412 | eval_rewards/accuracies 0.97 | 1.8 steps/s | ETA 0:00:44
    eval at step 40/120 | eval_loss 0.3121 | eval_rewards/accuracies 0.97 | 2.1 s
    training ended at step 120/120 after 0:01:05 | train_loss 0.4501 | 1.85 steps/s

and, while a long data stage formats and tokenizes (rlhf.data.workers), one line every few
seconds:

    train dataset big.jsonl: 40000/100000 rows (40%) | 5200 rows/s | ETA 0:00:11

When stderr is not a terminal (a log file, a SLURM output file), transformers turns tqdm off
and prints every log as a raw dict of a dozen metrics instead (its PrinterCallback), with no
progress and no ETA. `replace_printer` swaps that for these lines, logged on rank 0 through the
`rlhf` logger, so they land in <run_dir>/train.log (Hydra's job log) and on stdout (the SLURM
output file). At a terminal tqdm's bar stays, as it is.

The metric shown is the method's `progress_metric` (its learning metric, or the logged figure
that metric is derived from), its latest logged value. Steps per second are measured over the
last few logging steps, so the ETA follows the pace the run has now. The text and the rate are
plain functions of their inputs (`Progress`), tested without a trainer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import timedelta
from typing import Any

log = logging.getLogger("rlhf")

# Logging steps the rate is measured over.
WINDOW = 5


def number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """H:MM:SS (and days beyond 24 hours)."""
    return str(timedelta(seconds=max(0, round(seconds))))


def pace(steps_per_second: float) -> str:
    """Steps per second, or seconds per step when a step takes longer than a second."""
    if steps_per_second >= 1:
        return f"{steps_per_second:.3g} steps/s"
    return f"{1 / steps_per_second:.3g} s/step"


def position(step: int, total: int) -> str:
    return f"{step}/{total} ({100 * step // total}%)" if total > 0 else str(step)


def train_line(step: int, total: int, logs: dict[str, Any], metric: str, metric_value: Any,
               steps_per_second: float | None) -> str:
    parts = [f"step {position(step, total)}"]
    if "loss" in logs:
        parts.append(f"loss {number(logs['loss'])}")
    if metric_value is not None:
        parts.append(f"{metric} {number(metric_value)}")
    if steps_per_second:
        parts.append(pace(steps_per_second))
        if total > 0:
            parts.append(f"ETA {duration((total - step) / steps_per_second)}")
    return " | ".join(parts)


def eval_line(step: int, total: int, logs: dict[str, Any], metric: str) -> str:
    parts = [f"eval at step {step}/{total}" if total > 0 else f"eval at step {step}"]
    parts += [f"{key} {number(logs[key])}" for key in dict.fromkeys(("eval_loss", metric)) if key in logs]
    if "eval_runtime" in logs:
        parts.append(f"{number(logs['eval_runtime'])} s")
    return " | ".join(parts)


def end_line(step: int, total: int, logs: dict[str, Any]) -> str:
    parts = [f"training ended at step {step}/{total} after {duration(logs['train_runtime'])}"]
    if "train_loss" in logs:
        parts.append(f"train_loss {number(logs['train_loss'])}")
    if logs.get("train_steps_per_second"):
        parts.append(pace(logs["train_steps_per_second"]))
    return " | ".join(parts)


def rows_line(what: str, done: int, total: int, rows_per_second: float | None) -> str:
    """The data stage's progress: `train dataset x.jsonl: 40000/100000 rows (40%) | 5200
    rows/s | ETA 0:00:11`."""
    parts = [f"{what}: {done}/{total} rows ({100 * done // total if total else 100}%)"]
    if rows_per_second:
        parts.append(f"{rows_per_second:.0f} rows/s")
        if done < total:
            parts.append(f"ETA {duration((total - done) / rows_per_second)}")
    return " | ".join(parts)


class Progress:
    """The progress line of each logged dict; `now` is a monotonic clock in seconds."""

    def __init__(self, metric: str, window: int = WINDOW):
        self.metric = metric
        self.points: deque[tuple[int, float]] = deque(maxlen=window + 1)  # (step, time) of recent logs
        self.metric_value: Any = None

    def start(self, step: int, now: float) -> None:
        """Training (re)starts at `step`: the first rate is measured from here."""
        self.points.clear()
        self.points.append((step, now))

    def steps_per_second(self) -> float | None:
        if len(self.points) < 2:
            return None
        (first_step, first_time), (step, now) = self.points[0], self.points[-1]
        return (step - first_step) / (now - first_time) if step > first_step and now > first_time else None

    def line(self, logs: dict[str, Any], step: int, total: int, now: float) -> str | None:
        if self.metric in logs:
            self.metric_value = logs[self.metric]
        if any(key.startswith("eval_") for key in logs):
            return eval_line(step, total, logs, self.metric)
        if "train_runtime" in logs:
            return end_line(step, total, logs)
        if not self.points or step < self.points[-1][0]:
            self.start(step, now)
        elif step > self.points[-1][0]:
            self.points.append((step, now))
        return train_line(step, total, logs, self.metric, self.metric_value, self.steps_per_second())


def callback(metric: str) -> Any:
    """A TrainerCallback that logs the progress line of every log, on rank 0."""
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        def __init__(self) -> None:
            self.progress = Progress(metric)

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress.start(state.global_step, time.monotonic())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                line = self.progress.line(logs, state.global_step, state.max_steps, time.monotonic())
                if line:
                    log.info("%s", line)

    return ProgressLog()


def replace_printer(trainer: Any, metric: str) -> None:
    """Where transformers prints each log as a raw dict (tqdm off: stderr is not a terminal),
    log the progress line instead. With tqdm on, nothing changes."""
    from transformers import PrinterCallback

    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(callback(metric))
