"""One line per logging step, for log files and batch output: where training is, when it ends.

    step 40/120 (33%) | loss 0.412 | eval_rewards/accuracies 0.97 | 1.8 steps/s | ETA 0:00:44
    eval at step 40/120 | eval_loss 0.3121 | eval_rewards/accuracies 0.97 | 2.1 s
    training ended at step 120/120 after 0:01:05 | train_loss 0.4501 | 1.85 steps/s

(the data stage's own lines, while it formats and tokenizes, are rlhf.data.workers').

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
from typing import Any

from rlhf.core.text import duration, number, pace, position

log = logging.getLogger("rlhf")

# Logging steps the rate is measured over.
WINDOW = 5


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
