"""What the launching process does when a sweep ends: list every job's outcome.

Registered as a Hydra callback in conf/config.yaml. Jobs that failed are named with their
error (from their run dir's FAILED file), and the command exits non-zero when any failed;
the other jobs' results stand, and re-running the same command redoes only the failed ones.
(The sweeper itself is hydra_plugins/rlhf_sweeper: Hydra loads plugins from that package only.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from rlhf.run import rundir

log = logging.getLogger("rlhf")

# Run dirs of the jobs that failed in this process's sweeps (read by rlhf.launch.cli.launch).
FAILED_JOBS: list[Path] = []


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = rundir.job_dirs(sweep_dir)
        statuses = {job: rundir.status(job) for job in jobs}
        failed = [j for j in jobs if statuses[j] == rundir.FAILED_STATUS]
        unfinished = [j for j in jobs if statuses[j] == rundir.UNFINISHED]
        stopped = [j for j in jobs if statuses[j] == rundir.STOPPED]
        done = len(jobs) - len(failed) - len(unfinished) - len(stopped)
        log.info("sweep %s: %d of %d jobs finished%s", sweep_dir, done, len(jobs),
                 f", {len(stopped)} stopped at a rung of the halving sweep" if stopped else "")
        for job in failed:
            log.error("job %s failed: %s", job.name, rundir.failure(job, first_line=True) or "(no message)")
        for job in unfinished:
            log.error("job %s did not finish (no %s)", job.name, rundir.SUCCESS)
        FAILED_JOBS.extend(failed + unfinished)
        from rlhf.judge.report import write

        try:
            paths = write(sweep_dir)
            log.info("sweep report: %s (table: %s)", paths["png"], paths["md"])
        except Exception:  # a report must never hide the sweep's own outcome
            log.exception("could not write the sweep report for %s", sweep_dir)
