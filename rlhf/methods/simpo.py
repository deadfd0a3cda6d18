"""SimPO: length-normalised, reference-free preference optimisation (TRL experimental CPO with
loss_type=simpo). Pure SimPO has no NLL term: cpo_alpha defaults to 0 here, not TRL's 1."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import LOGITS, PAIRS, TOKENIZE_ROW_IDS, MethodConfig, MethodSpec, padding_free_knob, register


@dataclass
class SimPOMethod(MethodConfig):
    kind: str = "simpo"
    beta: float = knob(2.0, "reward scale (the SimPO paper uses 2 to 2.5)", gt=0)
    gamma: float = knob(0.5, "target reward margin (TRL's simpo_gamma)", ge=0)
    cpo_alpha: float = knob(0.0, "weight of an added NLL term (0: pure SimPO; > 0: CPO-SimPO)", ge=0)
    label_smoothing: float = knob(0.0, "label noise", ge=0, lt=0.5)
    # Off by default: exact (tests/test_padding_free.py), but TRL's trainer asks for full logits,
    # which come back in the padded layout, and its speed is not measured.
    padding_free: bool = padding_free_knob(default=False)


SPEC = register(MethodSpec(
    kind="simpo",
    schema=SimPOMethod,
    shape=PAIRS,
    trl_config="trl.experimental.cpo:CPOConfig",
    trl_trainer="trl.experimental.cpo:CPOTrainer",
    trl_fields={"beta": "beta", "gamma": "simpo_gamma", "cpo_alpha": "cpo_alpha",
                "label_smoothing": "label_smoothing"},
    metric="eval_rewards/accuracies",
    greater_is_better=True,
    reference_arg=None,
    fixed_trl={"loss_type": "simpo", "remove_unused_columns": False},
    tokenized=TOKENIZE_ROW_IDS,
    padding_free=LOGITS,
))
