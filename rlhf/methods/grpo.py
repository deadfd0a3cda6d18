"""GRPO: online RL from reward functions over groups of sampled completions (TRL GRPOTrainer).

The loss variants (`method=grpo|bnpo|dr_grpo|dapo`) are thin presets in conf/method/ that set
every coupled setting of their paper, not just loss_type. Generation runs in transformers, or
in vLLM (`method.use_vllm`, `method.vllm_mode=server|colocate`, the root `vllm` block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.config.fields import knob
from rlhf.methods.base import PROMPTS, MethodSpec, register
from rlhf.methods.online import (
    GROUP_TRL_FIELDS,
    ONLINE_CONVERT,
    GroupMethodConfig,
    check_group,
    reward_inputs,
    reward_trend,
    vllm_trl_kwargs,
)

GRPO_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class GRPOMethod(GroupMethodConfig):
    kind: str = "grpo"
    loss_type: str = knob("dapo", "loss aggregation", choices=GRPO_LOSSES)
    scale_rewards: str = knob("group", "advantage normalisation by the reward std", choices=SCALE_REWARDS)
    importance_sampling_level: str = knob("token", "importance ratio per token or per sequence (GSPO)",
                                          choices=("token", "sequence"))


def check_grpo(run: Any) -> list[str]:
    problems = check_group(run)
    if run.method.loss_type == "luspo" and run.method.importance_sampling_level != "sequence":
        problems.append("method.loss_type=luspo needs method.importance_sampling_level=sequence")
    return problems


SPEC = register(MethodSpec(
    kind="grpo",
    schema=GRPOMethod,
    shape=PROMPTS,
    trl_config="trl:GRPOConfig",
    trl_trainer="trl:GRPOTrainer",
    trl_fields={
        **GROUP_TRL_FIELDS,
        "loss_type": "loss_type",
        "scale_rewards": "scale_rewards",
        "importance_sampling_level": "importance_sampling_level",
    },
    metric="reward_last_tenth",
    greater_is_better=True,
    # reward_last_tenth exists only once training ended; while it trains, the logged reward.
    progress_metric="reward",
    reference_arg=None,
    # With a KL term (beta > 0) TRL loads a frozen copy of the policy itself.
    trainer_builds_reference=lambda method: method.beta > 0,
    # The loss presets of conf/method/ (each sets every coupled setting of its paper).
    presets=("bnpo", "dr_grpo", "dapo"),
    check=check_grpo,
    convert=ONLINE_CONVERT,
    run_trl=vllm_trl_kwargs,
    # GRPOConfig has no max_length; the data stage still bounds prompts by it.
    not_in_trl=("max_length",),
    summarize=reward_trend("reward"),
    trainer_inputs=reward_inputs,
))
