"""Which reference model a method compares against, decided explicitly and logged.

| method uses a reference? | adapter (peft)? | rl_adapter_ref_model | reference                             |
|---|---|---|---|
| no (ORPO, SimPO, GRPO and RLOO with beta=0) | any | any | none                       |
| yes (DPO, KTO, Online DPO, ...) | yes     | false                | the policy with its adapter disabled   |
| yes                      | yes            | true                 | a separate frozen copy of the base     |
| yes                      | no             | -                    | a separate frozen copy of the base     |
| GRPO, RLOO with beta > 0 | yes            | false (true refused) | the policy with its adapter disabled (TRL's) |
| GRPO, RLOO with beta > 0 | no             | -                    | TRL loads a copy from name_or_path     |
| yes, precomputed         | any            | false                | none in memory: log-probs computed once |

With method.precompute_ref_log_probs the reference log-probs are computed once, before
training, by the policy itself (identical to the reference at that point, or with its adapter
disabled), and no reference model is held at all. TRL caches them with the prepared data,
keyed by the weights and the data, so the jobs of a sweep over beta or the loss type compute
them once and share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADAPTER_DISABLED = "adapter_disabled"
SEPARATE_COPY = "separate_copy"
TRL_RELOAD = "trl_reload"
PRECOMPUTED = "precomputed"
NONE = "none"


@dataclass
class Reference:
    kind: str
    why: str
    model: Any = None  # the model to pass to the trainer, if the platform loads it


def choose(run: Any) -> Reference:
    """The reference policy of this run, without loading anything."""
    adapter = run.peft.adapter != "none"
    spec = run.spec
    if not spec.uses_reference(run.method):
        return Reference(NONE, f"{run.method.kind} has no reference model"
                         + (" (beta=0: no KL term)" if spec.trainer_builds_reference is not None else ""))
    if getattr(run.method, "precompute_ref_log_probs", False) and not run.peft.rl_adapter_ref_model:
        return Reference(PRECOMPUTED, "reference log-probs computed once before training by the policy itself"
                         + (" with its adapter disabled" if adapter else "") + "; no reference model in memory")
    if adapter and not run.peft.rl_adapter_ref_model:
        return Reference(ADAPTER_DISABLED, "the policy itself with its adapter disabled (peft="
                         f"{run.peft.adapter}; no second model in memory)")
    if spec.reference_arg is None:  # a trainer that builds its own (GRPO, RLOO with a KL term), no adapter
        return Reference(TRL_RELOAD, f"{run.method.kind} with beta={run.method.beta}: TRL loads a frozen copy of "
                         f"{run.model.name_or_path}")
    because = "peft.rl_adapter_ref_model=true" if adapter else "no adapter to disable"
    return Reference(SEPARATE_COPY, f"a separate frozen copy of {run.model.name_or_path} ({because})")


def load(run: Any, reference: Reference) -> Reference:
    if reference.kind == SEPARATE_COPY:
        from rlhf.models.loading import frozen_copy_dtype, load_model

        # TRL would reload model.config._name_or_path itself; loading here, with the policy's
        # attention settings, makes the copy explicit; frozen, it is stored in the compute's dtype.
        reference.model = load_model(run.model, run.hardware, "reference model", adapter=run.peft.adapter,
                                     dtype=frozen_copy_dtype(run.model, run.hardware, run.peft.adapter))
    if reference.kind == SEPARATE_COPY and getattr(run.method, "precompute_ref_log_probs", False):
        reference.why += "; its log-probs are computed once before training, then it is released"
    return reference
