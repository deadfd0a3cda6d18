"""The run directory: everything one job leaves behind, and how to tell a finished one.
(Its name, after the job's overrides, is rlhf.run.naming's.)

    <run_dir>/
      config.yaml         the resolved config; the only input of the training code, and enough
                          to re-run: python -m rlhf.train --config-path <run_dir> --config-name config
      env.json            package versions, git commit, python, host, command line
      log_history.jsonl   every metric the trainer logged, one line per log step
      metrics.json        final train and eval metrics, machine-readable; `ranks`: where each
                          training process ran (host, SLURM node, address)
      model/              the trained model (or adapter) and its tokenizer; model/adapter/: a
                          reward model's adapter alone, when model/ holds it merged
      checkpoints/        trainer checkpoints, for resuming
      completions.jsonl   the generation eval stage's completions with their scores
      generation_history.jsonl  the stage's figures at each mid-training eval
      evaluations/        python -m rlhf.evaluate on this run dir, one dir per call
      SUCCESS             written last, only when everything above is complete
      FAILED              the error, when the job failed (removed when it is re-run)
      .prepared_data.json several ranks: where rank 0 put the prepared data, for the others
      vllm_server.log     a job that started its own vLLM server: the server's log
      wandb_id            the W&B run this run dir logs to (a resumed job continues it)
      .hydra/, *.log      Hydra's own record of the job

The names are rlhf.run.files', re-exported here.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlhf.config.tree import REPO
from rlhf.core.versions import installed_versions

# The run dir's file names and status, from the leaf module that validation can reach too.
from rlhf.run.files import (  # noqa: F401 (part of this module's API)
    ADAPTER_DIR,
    CHECKPOINTS,
    COMPLETIONS,
    CONFIG,
    ENV,
    EVALUATIONS,
    FAILED,
    FAILED_STATUS,
    FINISHED,
    GENERATION_HISTORY,
    HALVING,
    HISTORY,
    METRICS,
    MODEL_DIR,
    PREPARED,
    RUNGS,
    SERVER_LOG,
    STATUSES,
    STOPPED,
    SUCCESS,
    UNFINISHED,
    WANDB_ID,
    failure,
    generation_metrics,
    is_finished,
    read_config,
    read_rungs,
    status,
)
from rlhf.run.naming import job_number

PACKAGES = ("rlhf", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "hydra-core",
            "omegaconf", "tokenizers", "safetensors", "numpy", "wandb", "submitit", "vllm")

CONFIG_HEADER = """\
# The resolved config of this run: what it trained, exactly. Re-run it with
#   python -m rlhf.train --config-path {run_dir} --config-name config
"""


def atomic_write(path: Path, text: str) -> None:
    """Write text so that a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def git_state(leaving_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The repository's commit and whether its tracked files differ from it (None for either
    when git or the checkout is missing: an installed copy).

    Args:
        leaving_out: paths below the repository whose changes do not count (a tool's outputs).

    Returns:
        {"commit": <sha> | None, "dirty": bool | None}.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in leaving_out))
    return {"commit": commit, "dirty": bool(changes) if changes is not None else None}


def prepare(run_dir: Path, resolved: dict) -> None:
    """Write the config and environment record of a job that is about to train."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)
    text = CONFIG_HEADER.format(run_dir=run_dir.resolve()) + yaml.safe_dump(resolved, sort_keys=False)
    atomic_write(run_dir / CONFIG, text)
    env = {
        "packages": installed_versions(PACKAGES),
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "argv": sys.argv,
        "slurm": {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                                                               "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")},
    }
    atomic_write(run_dir / ENV, json.dumps(env, indent=2) + "\n")


# Keys that depend on where the command was started, not on what is trained.
_PLACE_KEYS = ("cache_dir", "code_path")


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_differences(saved: dict, current: dict) -> list[str]:
    a = {k: v for k, v in _flatten(saved).items() if k not in _PLACE_KEYS}
    b = {k: v for k, v in _flatten(current).items() if k not in _PLACE_KEYS}
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} now" for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)]


def latest_checkpoint(run_dir: Path) -> str | None:
    """The newest complete trainer checkpoint in the run dir (the one a re-run resumes from)."""
    steps = [p.parent for p in (Path(run_dir) / CHECKPOINTS).glob("checkpoint-*/trainer_state.json")]
    return str(max(steps, key=lambda p: int(p.name.split("-")[1]))) if steps else None


def has_checkpoint(run_dir: Path) -> bool:
    return latest_checkpoint(run_dir) is not None


def check_same_config(run_dir: Path, resolved: dict, only_if_resumable: bool = False) -> None:
    """Refuse to skip or resume a run dir that holds a run of another config."""
    from rlhf.core.errors import RlhfError

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file() or (only_if_resumable and not has_checkpoint(run_dir)):
        return
    differences = config_differences(read_config(run_dir), resolved)
    if differences:
        state = "a finished run" if is_finished(run_dir) else "checkpoints of a run"
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise RlhfError(f"{run_dir} holds {state} of a different config ({shown}). Give this run its own "
                        "directory (hydra.run.dir=... or hydra.sweep.dir=...), or delete that one")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The run dirs of a sweep's jobs (those with Hydra's .hydra record), in job order."""
    dirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(dirs, key=lambda p: (job_number(p) is None, job_number(p) or 0, p.name))


def mark_success(run_dir: Path) -> None:
    atomic_write(Path(run_dir) / SUCCESS, "")


def mark_failed(run_dir: Path, error: BaseException) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUCCESS).unlink(missing_ok=True)
    atomic_write(run_dir / FAILED, f"{type(error).__name__}: {error}\n")


def write_metrics(run_dir: Path, metrics: dict) -> None:
    atomic_write(Path(run_dir) / METRICS, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / METRICS).read_text(encoding="utf-8"))


def objective(run_dir: Path, spec: Any) -> float | None:
    """The objective's final value in a finished run (what a sweeper optimises), or None."""
    from rlhf.config.checks import objective_metric

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return None
    return flat_metrics(read_metrics(run_dir)).get(objective_metric(spec))


def flat_metrics(metrics: dict) -> dict[str, Any]:
    """Every final figure of a metrics.json under its metric name: train, eval, the method's
    learning figures and the generation scores (generation/<name>); the later win a clash."""
    return {**metrics.get("train", {}), **metrics.get("learning", {}), **metrics.get("eval", {}),
            **generation_metrics(metrics.get("generation"))}
