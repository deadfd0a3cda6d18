"""python -m rlhf.train [group=option ...] [key=value ...] [-m for a sweep]

One job: Hydra composed its config; validate it, write the run dir, train, save. The
training itself (rlhf.runner) reads only the run dir's resolved config, so a job started by
Hydra, by a SLURM task or by an extra rank runs the same code on the same file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from rlhf.errors import RlhfError

log = logging.getLogger("rlhf")


def train_job(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from rlhf import rundir
    from rlhf.config.validate import validate

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        resolved = rundir.resolved_config(cfg)
        spec = validate(resolved)
        if rundir.is_finished(run_dir):
            log.info("%s is already finished (%s exists): nothing to do", run_dir, rundir.SUCCESS)
            return rundir.objective(run_dir, spec)
        rundir.prepare(run_dir, resolved)
        from rlhf.runner import run

        run(run_dir)
        return rundir.objective(run_dir, spec)
    except RlhfError as error:
        rundir.mark_failed(run_dir, error)
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    from rlhf.cli import launch

    launch(train_job)


if __name__ == "__main__":
    main()
