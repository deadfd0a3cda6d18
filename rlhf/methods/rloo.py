"""RLOO: REINFORCE with a leave-one-out baseline (TRL RLOOTrainer). Each prompt's
num_generations completions are scored by the rewards, and each completion's advantage is its
reward minus the mean reward of the others of its group; a KL penalty towards the reference
model (beta > 0) is subtracted from the reward, per sequence. Its sampling and reward knobs are
GRPO's, under the same names (rlhf.methods.online).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.config.fields import knob
from rlhf.methods.base import register
from rlhf.methods.online import GroupMethodConfig, check_group, group_spec


@dataclass
class RLOOMethod(GroupMethodConfig):
    kind: str = "rloo"
    beta: float = knob(0.05, "KL penalty towards the reference model, subtracted from the reward "
                             "(0: no reference model)", ge=0)
    normalize_advantages: bool = knob(False, "scale the advantages of each generation batch to mean 0, std 1")
    reward_clip_range: list[float] | None = knob(None, "clip the summed reward to [min, max] (None: no clipping)")


def check_rloo(run: Any) -> list[str]:
    problems = check_group(run)
    clip = run.method.reward_clip_range
    if clip is not None and (len(clip) != 2 or clip[0] >= clip[1]):
        problems.append(f"method.reward_clip_range={list(clip)} must be [min, max] with min < max")
    return problems


SPEC = register(group_spec(
    "rloo", RLOOMethod, "trl:RLOOConfig", "trl:RLOOTrainer",
    {name: name for name in ("normalize_advantages", "reward_clip_range")},
    check=check_rloo,
    convert={"reward_clip_range": lambda r: None if r is None else tuple(r)},
))
