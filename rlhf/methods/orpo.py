"""ORPO: SFT plus an odds-ratio preference term, no reference model (TRL experimental ORPO)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import (
    LOGITS,
    PAIRS,
    TOKENIZE_ROW_IDS,
    EmbeddedData,
    MethodConfig,
    MethodSpec,
    padding_free_knob,
    register,
)


@dataclass
class ORPOMethod(MethodConfig):
    kind: str = "orpo"
    # ORPO's lambda; TRL calls it beta. One name here: alpha (Axolotl's orpo_alpha).
    alpha: float = knob(0.1, "weight of the odds-ratio term against the SFT loss (TRL's ORPO beta)", gt=0)
    # Off by default: exact (tests/test_padding_free.py), but TRL's trainer asks for full logits,
    # which come back in the padded layout, and its speed is not measured.
    padding_free: bool = padding_free_knob(default=False)


SPEC = register(MethodSpec(
    kind="orpo",
    schema=ORPOMethod,
    shape=PAIRS,
    trl_config="trl.experimental.orpo:ORPOConfig",
    trl_trainer="trl.experimental.orpo:ORPOTrainer",
    trl_fields={"alpha": "beta"},
    metric="eval_rewards/accuracies",
    greater_is_better=True,
    reference_arg=None,
    # Axolotl's ORPO type: message lists with the answer's end-of-turn newline kept.
    extra_types=("chat_template.argilla",),
    # The embedded pairs as message lists, in that type.
    embedded=EmbeddedData("data/topics_conversations.train.jsonl", "chat_template.argilla", "data/topics_conversations.eval.jsonl"),
    # ORPO's collator needs the raw columns; TRL forces this with a warning otherwise.
    fixed_trl={"remove_unused_columns": False},
    tokenized=TOKENIZE_ROW_IDS,
    padding_free=LOGITS,
))
