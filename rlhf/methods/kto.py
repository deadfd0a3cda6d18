"""KTO: learning from unpaired answers labelled desirable or undesirable (TRL KTOTrainer)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import (
    FUSED_LOGPS,
    PROMPT_COMPLETION_IDS,
    REFERENCE_TRL_FIELDS,
    UNPAIRED,
    MethodSpec,
    ReferenceMethodConfig,
    check_reference,
    padding_free_knob,
    register,
)

KTO_LOSSES = ("kto", "apo_zero_unpaired")


@dataclass
class KTOMethod(ReferenceMethodConfig):
    kind: str = "kto"
    loss_type: str = knob("kto", "KTO loss", choices=KTO_LOSSES)
    desirable_weight: float = knob(1.0, "weight of the desirable answers' loss", gt=0)
    undesirable_weight: float = knob(1.0, "weight of the undesirable answers' loss", gt=0)
    padding_free: bool = padding_free_knob()


def check_kto(run) -> list[str]:
    method = run.method
    problems = []
    # KTO estimates its KL term from the other answers of the same batch.
    if method.micro_batch_size < 2:
        problems.append(f"method.micro_batch_size={method.micro_batch_size}: KTO needs at least 2 rows per "
                        "batch (its KL estimate pairs each answer with another prompt's)")
    return problems + check_reference(run)


SPEC = register(MethodSpec(
    kind="kto",
    schema=KTOMethod,
    shape=UNPAIRED,
    trl_config="trl:KTOConfig",
    trl_trainer="trl:KTOTrainer",
    trl_fields={
        **REFERENCE_TRL_FIELDS,
        "loss_type": "loss_type",
        "desirable_weight": "desirable_weight",
        "undesirable_weight": "undesirable_weight",
    },
    metric="eval_rewards/margins",
    greater_is_better=True,
    reference_arg="ref_model",
    check=check_kto,
    tokenized=PROMPT_COMPLETION_IDS,
    padding_free=FUSED_LOGPS,
))
