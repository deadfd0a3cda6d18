"""Saving on SLURM's warning signal, then letting the job be requeued; and on Ctrl-C, then stopping.

SLURM warns a job before it ends it: USR2 at `--signal=USR2@<s>` (the submitit launcher's
`signal_delay_s`, also what submitit sends to simulate preemption), SIGTERM when a partition
preempts it. Unhandled, submitit requeues and exits at once, mid-step, and the trainer's
progress since its last periodic checkpoint is lost.

`Preemption` takes those signals over: the handler only records the signal; the trainer
callback notices it at the end of the current optimizer step (agreeing across ranks), saves
a checkpoint into the run dir and stops; then `finish()` hands the signal to the handler that
was there before (submitit's, which requeues the job and exits). The requeued job finds the
checkpoint in its run dir and resumes from it.

Ctrl-C (SIGINT) is taken the same way: the step ends, a checkpoint is saved, and the job
stops with `Interrupted` (the command exits 130 and says to re-run it to resume); a second
Ctrl-C stops at once, without saving.

The agreement is one all-reduce per optimizer step, only when there are several ranks, on the
device the process group's backend takes tensors on (`collective_device`): NCCL, the backend
of every multi-GPU job, takes no CPU tensor.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger("rlhf")

WARNING_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
HANDLED = (*WARNING_SIGNALS, signal.SIGINT)


def collective_device(backend: str, cuda_index: int) -> torch.device:
    """The device a tensor must be on for a collective of a process group with this backend.

    `backend` is what torch.distributed reports for the group: a backend name ("gloo", "nccl",
    "mpi", "ucc") or the per-device form of `get_backend_config()` ("cpu:gloo,cuda:nccl").
    A backend that takes CPU tensors gets the CPU (no copy to a GPU, no CUDA call); one that
    takes CUDA tensors only (NCCL) gets this rank's own GPU, `cuda:<cuda_index>`, the device the
    rank trains on: NCCL runs a collective on the tensor's device, and each rank must use its
    own. Anything else (e.g. xccl, on XPUs, which rlhf does not train on) is a ValueError.
    """
    import torch
    from torch.distributed import Backend

    name = str(backend).lower()
    if ":" in name:  # "cpu:gloo,cuda:nccl": the devices are the keys
        devices = [pair.split(":", 1)[0].strip() for pair in name.split(",")]
    else:  # torch's own table: gloo, mpi, ucc -> cpu and cuda; nccl -> cuda
        devices = list(Backend.backend_capability.get(name, []))
    if "cpu" in devices:
        return torch.device("cpu")
    if "cuda" in devices:
        return torch.device("cuda", cuda_index)
    raise ValueError(f"torch.distributed backend {backend!r} takes tensors on {devices or 'unknown devices'}; "
                     "rlhf can agree across ranks on cpu (gloo, mpi, ucc) or cuda (nccl) only")


class Preempted(Exception):
    """Training stopped on a warning signal after saving; the job should be requeued."""


class Interrupted(Preempted):
    """Training stopped on Ctrl-C after saving; re-running the same command resumes it."""


class Preemption:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "Preemption":
        for signum in HANDLED:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:  # Ctrl-C again: stop now
            self.uninstall()
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: saving a checkpoint at the end of this step, then stopping (Ctrl-C again stops "
                        "at once, without saving)")
        elif self.signum is None:
            log.warning("received %s: saving a checkpoint at the end of this step, then stopping",
                        signal.Signals(signum).name)
        if self.signum != signal.SIGINT:  # Ctrl-C stays what stops the job, whatever follows it
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

            # The GPU the Trainer (accelerate) made current for this rank: LOCAL_RANK's, modulo
            # the GPUs the rank sees (one, index 0, when SLURM binds a GPU per task). CUDA is not
            # touched where nothing initialised it (CPU training: gloo, which takes CPU tensors).
            cuda_index = (torch.cuda.current_device() if torch.cuda.is_initialized()
                          else int(os.environ.get("LOCAL_RANK", "0")))
            device = collective_device(dist.get_backend_config(), cuda_index)
            tensor = torch.tensor([1 if flag else 0], device=device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
            if flag and self.signum is None:
                self.signum = signal.SIGUSR2
        return flag

    def finish(self, stopped_at: int | None = None) -> None:
        """Hand a recorded warning signal to the previous handler (submitit: requeue, then exit),
        then raise Preempted; on Ctrl-C raise Interrupted. `stopped_at`: the step training
        stopped at after saving (None: it had finished before it noticed the signal)."""
        signum = self.signum
        previous = self._previous.get(signum) if signum is not None else None
        self.uninstall()
        if signum is None:
            return
        saved = (f"after saving a checkpoint at step {stopped_at}" if stopped_at is not None
                 else "after the job finished")
        if signum == signal.SIGINT:
            raise Interrupted(f"stopped on Ctrl-C {saved}")
        if callable(previous):
            previous(signum, None)
        raise Preempted(f"stopped on {signal.Signals(signum).name} {saved}")
