"""KTO: learning from unpaired answers labelled desirable or undesirable (TRL KTOTrainer)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import UNPAIRED, MethodConfig, MethodSpec, register

KTO_LOSSES = ("kto", "apo_zero_unpaired")


@dataclass
class KTOMethod(MethodConfig):
    kind: str = "kto"
    beta: float = knob(0.1, "strength of the pull towards the reference model", gt=0)
    loss_type: str = knob("kto", "KTO loss", choices=KTO_LOSSES)
    desirable_weight: float = knob(1.0, "weight of the desirable answers' loss", gt=0)
    undesirable_weight: float = knob(1.0, "weight of the undesirable answers' loss", gt=0)
    sync_ref_model: bool = knob(False, "TR-DPO-style reference updates")
    ref_model_mixup_alpha: float = knob(0.6, "reference mixing weight", ge=0, le=1)
    ref_model_sync_steps: int = knob(512, "steps between reference updates", ge=1)
    precompute_ref_log_probs: bool = knob(
        False, "compute reference log-probs once before training and drop the reference model"
    )


def check_kto(run) -> list[str]:
    method = run.method
    problems = []
    # KTO estimates its KL term from the other answers of the same batch.
    if method.micro_batch_size < 2:
        problems.append(f"method.micro_batch_size={method.micro_batch_size}: KTO needs at least 2 rows per "
                        "batch (its KL estimate pairs each answer with another prompt's)")
    if method.sync_ref_model and method.precompute_ref_log_probs:
        problems.append("method.sync_ref_model cannot be combined with method.precompute_ref_log_probs")
    return problems


SPEC = register(MethodSpec(
    kind="kto",
    schema=KTOMethod,
    shape=UNPAIRED,
    trl_config="trl:KTOConfig",
    trl_trainer="trl:KTOTrainer",
    trl_fields={
        "beta": "beta",
        "loss_type": "loss_type",
        "desirable_weight": "desirable_weight",
        "undesirable_weight": "undesirable_weight",
        "sync_ref_model": "sync_ref_model",
        "ref_model_mixup_alpha": "ref_model_mixup_alpha",
        "ref_model_sync_steps": "ref_model_sync_steps",
        "precompute_ref_log_probs": "precompute_ref_log_probs",
    },
    metric="eval_rewards/margins",
    greater_is_better=True,
    reference_arg="ref_model",
    check=check_kto,
))
