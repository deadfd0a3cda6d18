"""The W&B run of a job: started before the trainer (which then logs into it), with the
resolved config attached and an id kept in the run dir so a requeued or re-run job continues
the same W&B run. Only rank 0 logs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from rlhf.run.files import WANDB_ID


def run_id(run_dir: Path) -> str:
    path = run_dir / WANDB_ID
    if path.is_file():
        return path.read_text().strip()
    new = uuid.uuid4().hex[:12]
    path.write_text(new + "\n")
    return new


def start(logger: Any, run_dir: Path, config: dict) -> Any:
    """Start (or resume) the job's W&B run; returns it (None on ranks other than 0)."""
    if int(os.environ.get("RANK", "0")) != 0:
        os.environ["WANDB_MODE"] = "disabled"
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_PROJECT"] = logger.project  # what the Trainer's callback reads
    return wandb.init(project=logger.project, entity=logger.entity, group=logger.group, name=logger.name,
                      tags=list(logger.tags), id=run_id(run_dir), resume="allow", dir=str(run_dir),
                      mode=logger.mode, config=config)


def finish(run: Any) -> None:
    if run is not None:
        run.finish()
