"""Rewards: the reward functions shipped with the platform, defined here so that configs name
them `rlhf.rewards.<name>`, and where any reward comes from (`sources`: a function, a reward
model directory, a hub id or a finished reward run dir).

May import: rlhf.core, rlhf.assets, rlhf.config, rlhf.run, rlhf.models.

`topic_reward` scores the embedded "topics" GRPO task: a prompt asks for a thing of one
category, and a completion earns the share of its words that name things of that category.
It is dense (a random model already scores above zero now and then), so GRPO's group
advantages are non-zero from the first step, and its answer is known.
"""

from __future__ import annotations

import re
from typing import Any

from rlhf.assets.build_data import CATEGORIES

_WORD = re.compile(r"[A-Za-z]+")


def completion_text(completion: Any) -> str:
    """TRL passes a string, or for conversational prompts a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if isinstance(m, dict))


def topic_reward(completions: list, category: list[str], **kwargs: Any) -> list[float]:
    rewards = []
    for completion, wanted in zip(completions, category):
        words = _WORD.findall(completion_text(completion).lower())
        good = set(CATEGORIES[wanted])
        rewards.append(sum(w in good for w in words) / len(words) if words else 0.0)
    return rewards
