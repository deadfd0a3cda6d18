"""A halving sweep's rungs, seen from one job (the sweep's side: rlhf.launch.halving).

The sweep starts a job with the step of its next rung in the environment (`STOP_AT`, set by
the sweeper through Hydra's `hydra.job.env_set`, so it is neither in the job's config nor in
its run dir's name). The job trains with the schedule of its whole run (method.max_steps: the
learning-rate schedule, the data order and the optimizer's state are those of a run that never
stops), and at the rung's step:

1. the generation eval stage judges the policy (the mid-training stage, its sampling on its own
   random state, so training's is untouched) and its figures go to generation_history.jsonl;
2. the trainer saves a checkpoint into the run dir and stops, as on a preemption;
3. rank 0 runs the eval set when the job has one (for a learning metric such as eval_loss) and
   appends the rung's record to `rungs.jsonl`: {"step", "metrics", "time"}.

The job is then `stopped` (rlhf.run.files.status), not failed. Started again with a later rung
it resumes from that checkpoint (the run dir's latest), so a point promoted through every rung
trains exactly as an uninterrupted run; started again with a rung it has reached, it does
nothing (a re-run of the sweep retrains nothing).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf.run import rundir

log = logging.getLogger("rlhf")

STOP_AT = "RLHF_STOP_AT_STEP"
SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")  # which array judged the rung


def stop_step(environ: Mapping[str, str] = os.environ) -> int | None:
    """The step of the rung this job stops at (None: it trains to its end).

    Args:
        environ: the process's environment.

    Returns:
        The positive step the sweep set in `STOP_AT`, or None when it is unset.
    """
    value = environ.get(STOP_AT)
    if not value:
        return None
    step = int(value)
    if step < 1:
        raise ValueError(f"{STOP_AT}={value}: a rung is a positive optimizer step")
    return step


def reached(run_dir: Path, step: int) -> dict[str, Any] | None:
    """The record of the rung at `step` when this job has reached it already (None: not yet).

    Args:
        run_dir: the job's run dir.
        step: the rung's step.

    Returns:
        Its record in rungs.jsonl ({"step", "metrics", "time"}).
    """
    return next((r for r in rundir.read_rungs(run_dir) if r["step"] == step), None)


def stopper(step: int) -> Any:
    """A TrainerCallback that saves a checkpoint and stops training at the end of optimizer step
    `step` (the stage's own callback judges the policy at that step first)."""
    from transformers import TrainerCallback

    class StopAtRung(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step and step < state.max_steps:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopAtRung()


def record(run_dir: Path, trainer: Any, step: int, has_eval: bool, seconds: float = 0.0,
           cpu_seconds: float = 0.0, gpu_seconds: float | None = None) -> dict[str, Any]:
    """Rank 0's record of the rung the job stopped at, appended to rungs.jsonl.

    Args:
        run_dir: the job's run dir.
        trainer: the stopped trainer, its policy as it was at `step`.
        step: the rung's step.
        has_eval: the job has an eval set (its figures are part of the record).
        seconds, cpu_seconds: the wall and CPU seconds of this session of the job (from its
            start, or its resume, to the rung), before the eval set runs.
        gpu_seconds: the session's wall seconds times the GPUs the job holds
            (rlhf.cluster.devices.gpu_seconds); None for a job on the CPU.

    Returns:
        The record: {"step", "metrics": the stage's figures at this step (generation/<name>)
        and the eval set's (eval_<name>), "time", "slurm": the SLURM job and array task that
        ran it, under SLURM}.
    """
    metrics: dict[str, Any] = {}
    if has_eval:
        metrics.update(trainer.evaluate())  # eval_loss, eval_rewards/..., as at the end of a run
    history = Path(run_dir) / rundir.GENERATION_HISTORY
    if history.is_file():
        for line in history.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("step") == step:
                metrics.update({k: v for k, v in entry.items() if k not in ("step", "time")})
    entry = {"step": step, "metrics": metrics, "time": time.time(), "seconds": round(seconds, 2),
             "cpu_seconds": round(cpu_seconds, 2), "gpu_seconds": gpu_seconds,
             "slurm": {k: os.environ[k] for k in SLURM_KEYS if k in os.environ}}
    with open(Path(run_dir) / rundir.RUNGS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    log.info("stopped at the rung at step %d: checkpoint saved, judged: %s", step,
             ", ".join(f"{k} = {v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))))
    return entry
