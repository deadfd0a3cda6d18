"""The function Hydra runs once per job (`train_job`): name the run, write its run dir, and run it
as what this process is: one of several SLURM tasks (a rank), the parent of local torchrun ranks,
or the single training process.

The job itself (rlhf.job.runner) reads only the run dir's resolved config, so a job started by
Hydra, by a SLURM task or as an extra rank runs the same code on the same file. A job whose run
dir is already finished (SUCCESS, same config) returns at once, so re-running a sweep redoes only
what did not finish; a job with a checkpoint resumes from it. In a sweep, a failing job is
recorded (FAILED in its run dir) and the other jobs go on; the command reports the failures at
the end and exits non-zero (rlhf.launch.sweep).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from rlhf.cluster import devices, distributed
from rlhf.config.validate import RunSpec, validate
from rlhf.core.errors import RlhfError
from rlhf.launch import cli
from rlhf.launch.compose import resolved_config
from rlhf.run import rundir

log = logging.getLogger("rlhf")

INTERRUPTED_EXIT = 130  # what a shell reports for a command stopped by Ctrl-C (128 + SIGINT)


def train_job(cfg: Any) -> float | None:
    """Run the job Hydra composed as `cfg`; returns its objective (what a sweeper optimises), or
    None when it failed in a sweep. A single run that fails exits: 1, its error printed once."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rlhf.job.preemption import Interrupted, Preempted

    hydra = HydraConfig.get()
    run_dir, sweeping = Path(hydra.runtime.output_dir), hydra.mode == RunMode.MULTIRUN
    if sweeping:  # a single run has no job number
        devices.note_sweep_job(os.environ, hydra.job.num)
    task = distributed.slurm_task()
    rank = task[0] if task else 0
    owns_run_dir = False  # a run dir holding another config's run must be left as it is
    try:
        resolved = resolved_config(cfg)
        run = validated(resolved)
        name_the_run(resolved, run, hydra, run_dir)
        log_companions(hydra)
        if rundir.is_finished(run_dir):
            rundir.check_same_config(run_dir, resolved)
            log.info("%s is already finished (%s exists): nothing to do", run_dir, rundir.SUCCESS)
            return rundir.objective(run_dir, run)
        if judged_at_its_rung(run_dir, resolved):
            return None
        if rank == 0:
            rundir.check_same_config(run_dir, resolved, only_if_resumable=True)
            rundir.prepare(run_dir, resolved)
        owns_run_dir = True
        run_as_this_process(run_dir, run, task)
        return rundir.objective(run_dir, run)
    except Interrupted as stop:  # Ctrl-C: this job saved; a sweep stops here too
        print(f"{run_dir}: {stop}. Re-run the same command to resume.", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except Preempted as stop:
        log.warning("%s: %s; starting the job again resumes from it", run_dir, stop)
        sys.exit(1)
    except Exception as error:
        if rank == 0 and owns_run_dir:
            rundir.mark_failed(run_dir, error)
        return report_failure(error, sweeping)


def judged_at_its_rung(run_dir: Path, resolved: dict) -> bool:
    """Whether a halving sweep launched this job at a rung it has reached already (its record in
    rungs.jsonl): then there is nothing to do, and a re-run of the sweep retrains nothing."""
    from rlhf.job import rungs

    step = rungs.stop_step()
    if step is None or not any(r["step"] >= step for r in rundir.read_rungs(run_dir)):
        return False
    rundir.check_same_config(run_dir, resolved)
    log.info("%s was judged at the rung at step %d already (%s): nothing to do", run_dir, step, rundir.RUNGS)
    return True


def log_companions(hydra: Any) -> None:
    """Which companion options the job uses (rlhf.launch.companions), in its own log: a tuning or
    evaluate block the command left (its `~group` override) is said here too, not only on the
    terminal that launched it."""
    from rlhf.launch.companions import COMPANIONS

    dropped = {override.lstrip("~").split("=", 1)[0] for override in hydra.overrides.task if override.startswith("~")}
    for companion in COMPANIONS:
        option = hydra.runtime.choices.get(companion.group)
        if option is not None:
            log.info("%s: %s (conf/%s/%s.yaml)", companion.group, option, companion.group, option)
        elif companion.group in dropped:
            log.info("%s: none, left by this command (made for %s): %s", companion.group, companion.made_for,
                     companion.without)


def validated(resolved: dict) -> RunSpec:
    """The job's run, validated once in this process: the launching process validated every job
    of the command before Hydra started any (rlhf.launch.cli.preflight), and a job Hydra runs
    here takes that RunSpec; a job in a process of its own (a SLURM or submitit task, an Optuna
    trial's sampled point) validates its config here."""
    return cli.validated_before(resolved) or validate(resolved)


def run_as_this_process(run_dir: Path, run: RunSpec, task: tuple[int, int] | None) -> None:
    """Train the job as what this process is: a SLURM task is one rank of the job; a job of
    several processes started here prepares the data once and starts its ranks with torchrun;
    otherwise this process trains it alone."""
    from rlhf.job.runner import prepare_before_ranks, run_until_done

    if task is not None:
        distributed.export_slurm_ranks()
        distributed.wait_for(run_dir / rundir.CONFIG)
        run_until_done(run_dir)
    elif run.hardware.world_size > 1:
        prepare_before_ranks(run_dir, run)
        distributed.run_local_ranks(run_dir, run.hardware)
    else:
        run_until_done(run_dir, run)


def report_failure(error: Exception, sweeping: bool) -> None:
    """A failed job's error, said once. In a sweep: logged (terminal and the job's train.log), and
    the sweep goes on (the launching process lists the failures when it ends). A single run:
    train.log keeps the record, the terminal gets `error: ...` on stderr, exit 1 (a bug: Hydra
    prints its traceback there)."""
    if sweeping:
        if isinstance(error, RlhfError):
            log.error("%s", error)
        else:
            log.exception("the job failed")
        return None
    log_to_files_only(error)
    if isinstance(error, RlhfError):
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    raise error


def name_the_run(resolved: dict, run: RunSpec, hydra: Any, run_dir: Path) -> None:
    """Fill the logger's group and name when unset, in the resolved config and the run alike: the
    sweep, and the job's overrides."""
    import dataclasses

    from hydra.types import RunMode

    logger = resolved.get("logger") or {}
    if logger.get("backend", "none") == "none":
        return
    if logger.get("group") is None:
        sweep = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else run_dir
        logger["group"] = "/".join(sweep.resolve().parts[-2:])
    if logger.get("name") is None:
        overrides = [o for o in hydra.overrides.task if not o.lstrip("+~").startswith("hydra")]
        logger["name"] = ",".join(overrides) or run_dir.name
    run.logger = dataclasses.replace(run.logger, group=logger["group"], name=logger["name"])


def log_to_files_only(error: Exception) -> None:
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
