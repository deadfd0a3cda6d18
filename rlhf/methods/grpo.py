"""GRPO: online RL from reward functions over groups of sampled completions (TRL GRPOTrainer).

The loss variants (`method=grpo|bnpo|dr_grpo|dapo`) are thin presets in conf/method/ that set
every coupled setting of their paper, not just loss_type. Generation runs in transformers, or
in vLLM (`method.use_vllm`, `method.vllm_mode=server|colocate`, the root `vllm` block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.config.fields import knob
from rlhf.methods.base import register
from rlhf.methods.online import GroupMethodConfig, check_group, group_spec

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


SPEC = register(group_spec(
    "grpo", GRPOMethod, "trl:GRPOConfig", "trl:GRPOTrainer",
    {name: name for name in ("loss_type", "scale_rewards", "importance_sampling_level")},
    check=check_grpo,
    # The loss presets of conf/method/ (each sets every coupled setting of its paper).
    presets=("bnpo", "dr_grpo", "dapo"),
))
