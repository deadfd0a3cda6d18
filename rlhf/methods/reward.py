"""Reward modelling: a sequence classifier (one score per text) trained on preference pairs to
score the chosen answer above the rejected one, the Bradley-Terry loss -log sigmoid(r_c - r_r)
(TRL RewardTrainer). The policy checkpoint is loaded with a one-label classification head
(`MethodSpec.model_head`); the trained `model/` is a reward model: it scores texts and does
not generate, so the generation eval stage does not apply, and it can judge other runs
(`evaluate.reward_models=[<its run dir>]`)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import SCORES, PAIRS, SEQUENCE_PAIR_IDS, MethodConfig, MethodSpec, padding_free_knob, register
from rlhf.models.heads import SEQUENCE_CLASSIFICATION


@dataclass
class RewardMethod(MethodConfig):
    kind: str = "reward"
    center_rewards_coefficient: float | None = knob(
        None, "weight of a penalty on the mean squared reward, pulling rewards towards zero "
              "(None: off; 0.01 in Eisenstein et al. 2023)", ge=0)
    disable_dropout: bool = knob(True, "switch the model's dropout off while training (TRL's default)")
    padding_free: bool = padding_free_knob()


SPEC = register(MethodSpec(
    kind="reward",
    schema=RewardMethod,
    shape=PAIRS,
    trl_config="trl:RewardConfig",
    trl_trainer="trl:RewardTrainer",
    trl_fields={"center_rewards_coefficient": "center_rewards_coefficient", "disable_dropout": "disable_dropout"},
    # The share of held-out pairs whose chosen answer scores above the rejected one.
    metric="eval_accuracy",
    greater_is_better=True,
    reference_arg=None,
    model_head=SEQUENCE_CLASSIFICATION,
    tokenized=SEQUENCE_PAIR_IDS,
    padding_free=SCORES,
))
