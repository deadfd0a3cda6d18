"""Text template families: how a conversation becomes the prompt string, and how an answer
ends. A family is one small class registered in FAMILIES; the field mappings it supports are
listed with it, so `chatml.intel` is the ChatML family applied to the `intel` field layout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from rlhf.methods.base import PAIRS, UNPAIRED

# (role, text) turns of the conversation before the answer, oldest first.
Turns = Sequence[tuple[str, str]]

PAIR_STRING_MAPPINGS = ("default", "argilla", "argilla_chat", "icr", "intel", "prompt_pairs", "ultra")
UNPAIRED_STRING_MAPPINGS = ("argilla", "argilla_chat", "intel", "prompt_pairs", "ultra")


class Family(ABC):
    name: str = ""
    # mappings this family supports, per row shape (preference pairs, unpaired rows)
    mappings: dict[str, tuple[str, ...]] = {}
    # The markers it writes that a model of this family knows: its tokenizer's chat template
    # writes them too, or they are its EOS/BOS (rlhf.data.lint.template_mismatch).
    special_tokens: tuple[str, ...] = ()
    # Model presets (conf/model/<name>.yaml, by name prefix) whose tokenizer writes them.
    model_presets: tuple[str, ...] = ()

    @abstractmethod
    def prompt(self, system: str | None, turns: Turns) -> str:
        """The conversation so far, ending with the assistant's generation prompt."""

    @abstractmethod
    def answer(self, text: str) -> str:
        """An answer as the trainer receives it (with the family's end-of-turn marker)."""


class ChatML(Family):
    name = "chatml"
    mappings = {PAIRS: PAIR_STRING_MAPPINGS, UNPAIRED: UNPAIRED_STRING_MAPPINGS}
    special_tokens = ("<|im_start|>", "<|im_end|>")
    model_presets = ("qwen", "tiny")

    @staticmethod
    def turn(role: str, text: str) -> str:
        return f"<|im_start|>{role}\n{text}<|im_end|>\n"

    def prompt(self, system: str | None, turns: Turns) -> str:
        head = self.turn("system", system) if system is not None else ""
        return head + "".join(self.turn(role, text) for role, text in turns) + "<|im_start|>assistant\n"

    def answer(self, text: str) -> str:
        return text + "<|im_end|>"


class Llama3(Family):
    name = "llama3"
    mappings = {PAIRS: PAIR_STRING_MAPPINGS, UNPAIRED: UNPAIRED_STRING_MAPPINGS}
    special_tokens = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    model_presets = ("llama-3",)

    @staticmethod
    def turn(role: str, text: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"

    def prompt(self, system: str | None, turns: Turns) -> str:
        # No <|begin_of_text|>: the tokenizer adds BOS when it tokenizes.
        head = self.turn("system", system) if system is not None else ""
        return (head + "".join(self.turn(role, text) for role, text in turns)
                + "<|start_header_id|>assistant<|end_header_id|>\n\n")

    def answer(self, text: str) -> str:
        return text + "<|eot_id|>"


class Zephyr(Family):
    name = "zephyr"
    mappings = {PAIRS: ("nectar",)}
    # Plain text in Zephyr's own (Mistral) vocabulary, but written by its chat template; </s>
    # is its EOS. No shipped model preset writes them (HuggingFaceH4/zephyr-7b-beta does).
    special_tokens = ("<|system|>", "<|user|>", "<|assistant|>", "</s>")

    def prompt(self, system: str | None, turns: Turns) -> str:
        # Always an empty system turn, as Axolotl's zephyr.nectar writes it.
        body = "".join(f"<|{role}|>\n{text}</s>\n" for role, text in turns)
        return "<|system|>\n</s>\n" + body + "<|assistant|>\n"

    def answer(self, text: str) -> str:
        return text


FAMILIES: dict[str, Family] = {family.name: family for family in (ChatML(), Llama3(), Zephyr())}
