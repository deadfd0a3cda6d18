"""Saving on SLURM's warning signal, then letting the job be requeued.

SLURM warns a job before it ends it: USR2 at `--signal=USR2@<s>` (the submitit launcher's
`signal_delay_s`, also what submitit sends to simulate preemption), SIGTERM when a partition
preempts it. Unhandled, submitit requeues and exits at once, mid-step, and the trainer's
progress since its last periodic checkpoint is lost.

`Preemption` takes those signals over: the handler only records the signal; the trainer
callback notices it at the end of the current optimizer step (agreeing across ranks), saves
a checkpoint into the run dir and stops; then `finish()` hands the signal to the handler that
was there before (submitit's, which requeues the job and exits). The requeued job finds the
checkpoint in its run dir and resumes from it.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

log = logging.getLogger("rlhf")

WARNING_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class Preempted(Exception):
    """Training stopped on a warning signal after saving; the job should be requeued."""


class Preemption:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "Preemption":
        for signum in WARNING_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            log.warning("received %s: saving a checkpoint at the end of this step, then stopping",
                        signal.Signals(signum).name)
        self.signum = signum

    def callback(self) -> Any:
        from transformers import TrainerCallback

        preemption = self

        class _SaveAndStop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if preemption.agreed():
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return _SaveAndStop()

    def agreed(self) -> bool:
        """Whether any rank got the signal (every rank must stop at the same step)."""
        import torch.distributed as dist

        flag = self.signum is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            tensor = torch.tensor([1 if flag else 0])
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
            if flag and self.signum is None:
                self.signum = signal.SIGUSR2
        return flag

    def finish(self) -> None:
        """Hand the recorded signal to the previous handler (submitit: requeue, then exit)."""
        signum = self.signum
        previous = self._previous.get(signum) if signum is not None else None
        self.uninstall()
        if signum is None:
            return
        if callable(previous):
            previous(signum, None)
        raise Preempted(f"stopped on {signal.Signals(signum).name} after saving a checkpoint")
