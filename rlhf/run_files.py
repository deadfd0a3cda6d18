"""The files of a run dir by name, and a run's status read from them (the layout is described
in rlhf.rundir, which re-exports all of this). A leaf module: the validation code reaches it
(rlhf.reward_sources reads a reward model's run dir) without reaching rlhf.rundir, whose
helpers import the config checks.
"""

from __future__ import annotations

from pathlib import Path

SUCCESS = "SUCCESS"
FAILED = "FAILED"
CONFIG = "config.yaml"
METRICS = "metrics.json"
HISTORY = "log_history.jsonl"
ENV = "env.json"
MODEL_DIR = "model"
CHECKPOINTS = "checkpoints"


def read_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((Path(run_dir) / CONFIG).read_text(encoding="utf-8"))


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / SUCCESS).is_file()


FINISHED, FAILED_STATUS, UNFINISHED = "finished", "failed", "unfinished"
STATUSES = (FINISHED, FAILED_STATUS, UNFINISHED)


def status(run_dir: Path) -> str:
    """finished (SUCCESS), failed (FAILED) or unfinished (neither: running, killed or preempted)."""
    if is_finished(run_dir):
        return FINISHED
    return FAILED_STATUS if (Path(run_dir) / FAILED).is_file() else UNFINISHED


def failure(run_dir: Path, first_line: bool = False) -> str:
    """A failed job's error, or its first line ("" when it did not fail)."""
    path = Path(run_dir) / FAILED
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    return text.splitlines()[0] if first_line and text else text
