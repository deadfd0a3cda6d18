"""Run-level train loss and token count that survive a resume from a checkpoint.

The Trainer's `train_loss` (TrainOutput.metrics) is the mean loss over the steps of the current
`train()` call only, and DPOTrainer and KTOTrainer count their logged `num_tokens` in an
attribute no checkpoint saves. So a run killed and resumed reported the mean of the steps after
the resume and a token count that restarted at zero, where an uninterrupted run of the same
config reports the whole run.

`RunTotals` is a stateful trainer callback (transformers' ExportableState): every checkpoint's
trainer_state.json holds, under `stateful_callbacks`, the loss summed over every step up to it
and TRL's token count at it. On resume the callback reads them back from the TrainerState,
puts TRL's count back where TRL keeps counting, and reports the whole run's figures at the end.
GRPO-family trainers count tokens into TrainerState.num_input_tokens_seen, which the Trainer
checkpoints itself; ORPO and CPO (SimPO) count none.

A checkpoint also holds the Trainer's logging window (the loss summed since the last log, and
that log's step), which a resumed Trainer would start afresh: restored, the first log after a
resume averages the same steps as an uninterrupted run's, bit for bit (a halving sweep's
promoted points resume at every rung).

Its cost is a gather of one scalar when a checkpoint is saved; nothing per step.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import nested_gather

from rlhf.trl import written_for

log = logging.getLogger("rlhf")

WRITTEN_FOR = written_for(transformers=">=5.23,<5.24", trl=">=1.16,<1.17")

# The two figures neither library makes public, touched only by the three functions below:
# - Trainer._tr_loss: the loss summed on the device since the last log. A checkpoint that falls
#   between two logs (the default: checkpoints at epoch ends, logs every N steps) would otherwise
#   lose the loss of those steps, since the resumed Trainer starts a new logging window there.
# - DPOTrainer/KTOTrainer._total_train_tokens: TRL's running token count, which it logs as
#   `num_tokens` and which no checkpoint saves.
TRL_TOKENS = "_total_train_tokens"


def _unlogged_loss(trainer: Any) -> Any:
    return trainer._tr_loss


def _trl_tokens(trainer: Any) -> int | None:
    return getattr(trainer, TRL_TOKENS, None)


def _restore_trl_tokens(trainer: Any, tokens: int) -> None:
    setattr(trainer, TRL_TOKENS, tokens)


def _reopen_logging_window(trainer: Any, loss: float, last_logged: int) -> None:
    """The Trainer's logging window as it was at the checkpoint: the loss summed since the last
    log, and that log's step (the Trainer starts a new window at a resume: its first log after
    it would average only the steps after the resume)."""
    import torch

    trainer._tr_loss = torch.tensor(loss, device=trainer._tr_loss.device, dtype=trainer._tr_loss.dtype)
    trainer._globalstep_last_logged = last_logged


class RunTotals(TrainerCallback, ExportableState):
    """Attach with `RunTotals.attach(trainer)` before `trainer.train()`; after it, `metrics(...)`
    gives the run-level `train_loss` and `num_tokens`.

    It restores itself from the TrainerState in on_train_begin, so it does not need (and does
    not work with) TrainingArguments.restore_callback_states_from_checkpoint, which would replace
    it with a new instance that has no trainer."""

    def __init__(self, trainer: Any = None):
        self._trainer = weakref.ref(trainer) if trainer is not None else None
        self.carried_loss: float | None = 0.0  # the loss summed over the steps before this train() call
        self.start_step = 0
        self.logged_loss = 0.0  # summed over the windows logged in this train() call
        self.last_logged_step = 0
        self.unlogged: tuple[int, float] | None = None  # (step, loss summed since the last log) before a save
        self.training = False

    @classmethod
    def attach(cls, trainer: Any) -> "RunTotals":
        totals = cls(trainer)
        trainer.add_callback(totals)
        return totals

    @property
    def trainer(self) -> Any:
        return self._trainer() if self._trainer is not None else None

    # What a checkpoint saves (ExportableState): called by Trainer._save_checkpoint after the
    # step's log, and once when the TrainerState is created.
    def state(self) -> dict:
        trainer = self.trainer
        loss_sum = None
        if self.carried_loss is not None:
            loss_sum = self.carried_loss + self.logged_loss + self._unlogged_now(trainer)
        return {"args": {}, "attributes": {"loss_sum": loss_sum,
                                           "trl_tokens": _trl_tokens(trainer) if trainer is not None else None,
                                           "unlogged_loss": self._unlogged_now(trainer),
                                           "last_logged_step": self.last_logged_step}}

    def _unlogged_now(self, trainer: Any) -> float:
        if trainer is None or not self.training:  # the TrainerState being created, before training
            return 0.0
        if self.unlogged is not None and self.unlogged[0] == trainer.state.global_step:
            return self.unlogged[1]
        # A save this callback did not see coming (save_strategy="best"): this rank's own figure.
        return float(_unlogged_loss(trainer))

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__)
        if saved is None:  # a checkpoint written before this callback existed: its totals are unknown
            log.warning("the checkpoint holds no run totals: train_loss and num_tokens cover this session only")
            self.carried_loss = None
            state.stateful_callbacks[type(self).__name__] = self.state()  # _save_checkpoint expects the key
        last_logged = state.global_step
        if saved is not None:
            attributes = saved["attributes"]
            self.carried_loss = attributes["loss_sum"]
            tokens, trainer = attributes.get("trl_tokens"), self.trainer
            if tokens is not None and trainer is not None and _trl_tokens(trainer) is not None:
                _restore_trl_tokens(trainer, tokens)  # TRL counts on from the checkpoint's count
            unlogged = attributes.get("unlogged_loss")
            if unlogged is not None and attributes.get("last_logged_step") is not None and trainer is not None \
                    and state.global_step > 0:
                # The window the checkpoint fell in goes on: the first log after the resume averages
                # the same steps as an uninterrupted run's (its loss is then counted when logged).
                last_logged = attributes["last_logged_step"]
                _reopen_logging_window(trainer, unlogged, last_logged)
                if self.carried_loss is not None:
                    self.carried_loss -= unlogged
        self.start_step, self.last_logged_step = state.global_step, last_logged
        self.logged_loss, self.unlogged, self.training = 0.0, None, True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # a training log: the mean loss per step since the previous one
            self.logged_loss += logs["loss"] * (state.global_step - self.last_logged_step)
            self.last_logged_step = state.global_step
            self.unlogged = (state.global_step, 0.0)  # the log took all of it

    def on_step_end(self, args, state, control, **kwargs):
        self._before_save(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._before_save(args, state, control)

    def _before_save(self, args, state, control) -> None:
        # Every rank gets here (should_save agrees across ranks), so the loss not yet logged can be
        # averaged over the ranks as the Trainer's next log would. Attached after the other
        # callbacks, this sees every save they ask for, the preemption callback's included.
        trainer = self.trainer
        if control.should_save and trainer is not None:
            gathered = nested_gather(_unlogged_loss(trainer), args.parallel_mode).mean().item()
            self.unlogged = (state.global_step, gathered)

    def metrics(self, train_result: Any) -> dict[str, Any]:
        """The run's train_loss (the Trainer's figure, over every step of the run) and, where TRL
        counts them, its num_tokens; call after trainer.train() returned `train_result`."""
        trainer = self.trainer
        state = trainer.state
        out: dict[str, Any] = {}
        if self.carried_loss is not None and state.global_step > 0:
            # the Trainer's train_loss is its loss sum over the steps of this call, divided by them
            session_sum = train_result.training_loss * (state.global_step - self.start_step)
            out["train_loss"] = (self.carried_loss + session_sum) / state.global_step
        tokens = _trl_tokens(trainer) or state.num_input_tokens_seen  # a trainer counts in one of them
        if tokens or _trl_tokens(trainer) is not None:
            out["num_tokens"] = tokens
        return out
