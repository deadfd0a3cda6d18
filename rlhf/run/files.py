"""Every file a job leaves in its run dir, by name, and a run's status read from them. The layout
with what each holds is in rlhf.run.rundir, which re-exports all of this; the sides that write a
file name it from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SUCCESS = "SUCCESS"  # written last, when everything else is complete
FAILED = "FAILED"  # the error of a job that failed
CONFIG = "config.yaml"  # the resolved config: the only input of every rank
METRICS = "metrics.json"
HISTORY = "log_history.jsonl"  # every metrics dict the trainer logged
ENV = "env.json"  # package versions, git commit, host, command line
MODEL_DIR = "model"  # the trained model and its tokenizer
ADAPTER_DIR = "adapter"  # under MODEL_DIR: a merged classifier's adapter alone (rlhf.job.runner)
CHECKPOINTS = "checkpoints"
COMPLETIONS = "completions.jsonl"  # the generation eval stage's completions and scores
GENERATION_HISTORY = "generation_history.jsonl"  # its figures at each mid-training eval
EVALUATIONS = "evaluations"  # python -m rlhf.evaluate on a run dir writes under <run dir>/evaluations/
PREPARED = ".prepared_data.json"  # several ranks: where rank 0 put the prepared data
SERVER_LOG = "vllm_server.log"  # a job's own vLLM server
WANDB_ID = "wandb_id"  # the W&B run this run dir logs to, so a resumed job continues it
RUNGS = "rungs.jsonl"  # a halving sweep's judgements of the job at each rung it reached
HALVING = "halving.json"  # in a halving sweep's dir: its rungs, each setting's scores, what was spent

# metrics.json's `generation` block (the generation eval stage): its figures' metric names.
GENERATION_PREFIX = "generation/"


def generation_metrics(block: dict[str, Any] | None) -> dict[str, float]:
    """A `generation` block's figures under their metric names (generation/win_rate, ...), as
    reports and objectives use them."""
    return {GENERATION_PREFIX + k: v for k, v in ((block or {}).get("metrics") or {}).items()}


def read_config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((Path(run_dir) / CONFIG).read_text(encoding="utf-8"))


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / SUCCESS).is_file()


FINISHED, FAILED_STATUS, STOPPED, UNFINISHED = "finished", "failed", "stopped", "unfinished"
STATUSES = (FINISHED, FAILED_STATUS, STOPPED, UNFINISHED)


def status(run_dir: Path) -> str:
    """finished (SUCCESS), failed (FAILED), stopped (a halving sweep judged it at a rung and did
    not promote it: RUNGS, its checkpoint kept) or unfinished (none of these: running, killed or
    preempted)."""
    if is_finished(run_dir):
        return FINISHED
    if (Path(run_dir) / FAILED).is_file():
        return FAILED_STATUS
    return STOPPED if (Path(run_dir) / RUNGS).is_file() else UNFINISHED


def read_rungs(run_dir: Path) -> list[dict[str, Any]]:
    """A job's rung records, in the order it reached them: {"step", "metrics": flat metrics}."""
    import json

    path = Path(run_dir) / RUNGS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def failure(run_dir: Path, first_line: bool = False) -> str:
    """A failed job's error, or its first line ("" when it did not fail)."""
    path = Path(run_dir) / FAILED
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    return text.splitlines()[0] if first_line and text else text
