"""python -m rlhf.train [group=option ...] [key=value ...] [-m for a sweep]

One job: Hydra composed its config; validate it, write the run dir, train, save. The
training itself (rlhf.runner) reads only the run dir's resolved config, so a job started by
Hydra, by a SLURM task or as an extra rank runs the same code on the same file.

A job whose run dir is already finished (SUCCESS, same config) returns at once, so
re-running a sweep redoes only what did not finish; a job with a checkpoint resumes from it.
In a sweep, a failing job is recorded (FAILED in its run dir) and the other jobs go on; the
command reports the failures at the end and exits non-zero.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from rlhf.errors import RlhfError

log = logging.getLogger("rlhf")


def _objective(run_dir: Path, spec) -> float | None:
    from rlhf import rundir

    return rundir.objective(run_dir, spec)


def train_job(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rlhf import devices, distributed, rundir
    from rlhf.config.validate import validate
    from rlhf.preemption import Preempted

    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    if hydra.mode == RunMode.MULTIRUN:  # a single run has no job number
        devices.note_sweep_job(os.environ, hydra.job.num)
    task = distributed.slurm_task()
    rank = task[0] if task else 0
    owns_run_dir = False  # a run dir holding another config's run must be left as it is
    try:
        resolved = rundir.resolved_config(cfg)
        rundir.name_the_run(resolved, hydra, run_dir)
        spec = validate(resolved)
        if rundir.is_finished(run_dir):
            rundir.check_same_config(run_dir, resolved)
            log.info("%s is already finished (%s exists): nothing to do", run_dir, rundir.SUCCESS)
            return _objective(run_dir, spec)
        if rank == 0:
            rundir.check_same_config(run_dir, resolved, only_if_resumable=True)
            rundir.prepare(run_dir, resolved)
        owns_run_dir = True
        from rlhf.runner import run_until_done

        if task is not None:  # one of several SLURM tasks: this process is a rank
            distributed.export_slurm_ranks()
            distributed.wait_for(run_dir / rundir.CONFIG)
            run_until_done(run_dir)
        elif spec.hardware.world_size > 1:
            from rlhf.runner import prepare_before_ranks

            prepare_before_ranks(run_dir, spec)
            distributed.run_local_ranks(run_dir, spec.hardware)
        else:
            run_until_done(run_dir, spec)
        return _objective(run_dir, spec)
    except Preempted as stop:
        log.warning("%s: %s; starting the job again resumes from it", run_dir, stop)
        sys.exit(1)
    except Exception as error:
        if rank == 0 and owns_run_dir:
            rundir.mark_failed(run_dir, error)
        if hydra.mode == RunMode.MULTIRUN:
            # Logged once (terminal and the job's train.log); the sweep goes on, and the
            # launching process lists the failures when it ends.
            if isinstance(error, RlhfError):
                log.error("%s", error)
            else:
                log.exception("the job failed")
            return None
        # A single run: train.log keeps the record, the terminal gets the message once, as
        # `error: ...` on stderr (a bug: Hydra prints its traceback there).
        _log_to_files_only(error)
        if isinstance(error, RlhfError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
        raise


def _log_to_files_only(error: Exception) -> None:
    """Record a single run's error in its log file(s) (train.log), not on the terminal, where
    it is printed once by the caller."""
    if isinstance(error, RlhfError):
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (error,), None)
    else:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "the job failed", (),
                                (type(error), error, error.__traceback__))
    seen, logger = set(), log
    while logger is not None:  # the handlers a record of `log` would reach
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen:
                seen.add(id(handler))
                if record.levelno >= handler.level:
                    handler.handle(record)
        logger = logger.parent if logger.propagate else None


def main() -> None:
    from rlhf.cli import launch

    launch(train_job)


if __name__ == "__main__":
    main()
