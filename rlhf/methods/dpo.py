"""DPO and the losses TRL's DPOTrainer offers (IPO is `method=ipo`: DPO with `loss_type: ipo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.config.fields import knob
from rlhf.core.errors import did_you_mean, one_of
from rlhf.methods.base import (
    FUSED_LOGPS,
    PAIRS,
    PROMPT_ANSWER_IDS,
    REFERENCE_TRL_FIELDS,
    MethodSpec,
    ReferenceMethodConfig,
    check_reference,
    padding_free_knob,
    register,
)

# Every value TRL 1.16's DPOConfig.loss_type accepts (tests/test_methods.py checks this list
# against the installed TRL). TRL itself only notices a bad name at the first loss.
DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
# The losses built on the chosen-rejected reward difference: the only ones an f-divergence
# other than reverse KL generalises (TRL raises at trainer construction otherwise).
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


@dataclass
class DPOMethod(ReferenceMethodConfig):
    kind: str = "dpo"
    # A name, or a list of names combined with loss_weights (e.g. MPO, or RPO as [sigmoid, sft]).
    loss_type: Any = knob("sigmoid", f"DPO loss, or a list of them: {one_of(DPO_LOSSES)}")
    loss_weights: Any = knob(None, "one weight per loss in loss_type (default: all 1.0)")
    label_smoothing: float = knob(0.0, "label noise for robust (< 0.5) and exo_pair (> 0)", ge=0, lt=1)
    ld_alpha: float | None = knob(None, "LD-DPO weight of the verbose tokens (None: plain DPO)", ge=0, le=1)
    f_divergence_type: str = knob("reverse_kl", "f-DPO divergence", choices=F_DIVERGENCES)
    f_alpha_divergence_coef: float = knob(0.5, "alpha of the alpha-divergence", gt=0)
    use_weighting: bool = knob(False, "WPO weighting of pairs by the policy's probability")
    discopop_tau: float = knob(0.05, "DiscoPOP temperature", gt=0)
    padding_free: bool = padding_free_knob()


def loss_names(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def check_dpo(run) -> list[str]:
    method = run.method
    problems = []
    value = method.loss_type
    if not isinstance(value, str) and not (
        isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
    ):
        return [f"method.loss_type={value!r} must be a loss name or a non-empty list of names: "
                f"{one_of(DPO_LOSSES)}"]
    losses = loss_names(value)
    for loss in losses:
        if loss not in DPO_LOSSES:
            problems.append(
                f"method.loss_type={loss!r} is not a DPO loss TRL has{did_you_mean(loss, DPO_LOSSES)}; "
                f"valid: {one_of(DPO_LOSSES)}"
            )
    weights = method.loss_weights
    if weights is not None:
        if not isinstance(weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights
        ):
            problems.append(f"method.loss_weights={weights!r} must be a list of numbers")
        elif len(weights) != len(losses):
            problems.append(
                f"method.loss_weights has {len(weights)} weights for {len(losses)} losses "
                f"({one_of(losses)}): give one weight per loss"
            )
    if method.f_divergence_type != "reverse_kl":
        unsupported = [loss for loss in losses if loss not in F_DIVERGENCE_LOSSES]
        if unsupported:
            problems.append(
                f"method.f_divergence_type={method.f_divergence_type!r} does not apply to "
                f"{one_of(unsupported)}; it works with: {one_of(F_DIVERGENCE_LOSSES)}"
            )
    if "exo_pair" in losses and method.label_smoothing <= 0:
        problems.append("method.loss_type 'exo_pair' needs method.label_smoothing > 0 (the EXO paper uses 1e-3)")
    if "robust" in losses and method.label_smoothing >= 0.5:
        problems.append(f"method.label_smoothing={method.label_smoothing} must be < 0.5 for the 'robust' loss")
    if method.use_weighting and {"aot", "aot_unpaired"} & set(losses):
        problems.append("method.use_weighting (WPO) does not work with the 'aot' / 'aot_unpaired' losses")
    return problems + check_reference(run)


SPEC = register(MethodSpec(
    kind="dpo",
    schema=DPOMethod,
    shape=PAIRS,
    trl_config="trl:DPOConfig",
    trl_trainer="trl:DPOTrainer",
    trl_fields={
        **REFERENCE_TRL_FIELDS,
        "loss_type": "loss_type",
        "loss_weights": "loss_weights",
        "label_smoothing": "label_smoothing",
        "ld_alpha": "ld_alpha",
        "f_divergence_type": "f_divergence_type",
        "f_alpha_divergence_coef": "f_alpha_divergence_coef",
        "use_weighting": "use_weighting",
        "discopop_tau": "discopop_tau",
    },
    metric="eval_rewards/accuracies",
    greater_is_better=True,
    reference_arg="ref_model",
    shares_reference_logps=True,
    tokenized=PROMPT_ANSWER_IDS,
    padding_free=FUSED_LOGPS,
    # IPO is DPO with loss_type ipo (conf/method/ipo.yaml).
    presets=("ipo",),
    check=check_dpo,
    convert={"loss_type": loss_names, "loss_weights": lambda w: None if w is None else list(w)},
))
