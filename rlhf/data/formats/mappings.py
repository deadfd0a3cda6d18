"""Field mappings: which fields of a row hold the system text, the conversation and the
answers. Each is registered once and works with every family that lists it (so
`chatml.intel` and `llama3.intel` read the same fields and differ only in the template).

A pair mapping returns (system, turns, chosen, rejected); an unpaired (KTO) mapping returns
(system, turns, completion). `turns` is the conversation before the answer, as (role, text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlhf.data.formats.base import Fields, RowError

PairParts = tuple["str | None", list[tuple[str, str]], str, str]
UnpairedParts = tuple["str | None", list[tuple[str, str]], str]


@dataclass(frozen=True)
class Mapping_:
    name: str
    required: tuple[str, ...]
    extract: Callable[[Fields], Any]
    optional: tuple[str, ...] = ("system",)
    # Alternatives: any one field of each group satisfies the type (for suggestions).
    alternatives: tuple[tuple[str, ...], ...] = ()
    # Required fields that hold message lists (the others hold text).
    message_fields: tuple[str, ...] = ()

    def fits(self, row: Mapping) -> bool:
        """Whether the row has this mapping's fields, each of the right kind (for suggestions)."""
        def right_kind(name: str) -> bool:
            value = row.get(name)
            if name in self.message_fields:
                return isinstance(value, (list, tuple))
            return isinstance(value, str) or (name == "label" and value is not None)

        return (all(right_kind(name) for name in self.required)
                and all(any(right_kind(name) for name in group) for group in self.alternatives))


def _history(fields: Fields, name: str, messages: list[Mapping], first_user_text: str | None = None
             ) -> list[tuple[str, str]]:
    """The turns of a conversation before its last message; the first must be the user's and the
    last (the answer) the assistant's. `first_user_text` replaces the first turn's text (ultra)."""
    if len(messages) < 2:
        raise RowError(f"field {name!r} has {len(messages)} message(s); {fields.type_name} needs the user's "
                       "message and the assistant's answer", field=name)
    if fields.role(name, messages, 0) != "user":
        raise RowError(f"field {name!r} starts with a {fields.role(name, messages, 0)!r} message; "
                       f"{fields.type_name} needs the conversation to start with the user", field=name)
    if fields.role(name, messages, -1) != "assistant":
        raise RowError(f"field {name!r} ends with a {fields.role(name, messages, -1)!r} message; its last "
                       "message must be the assistant's answer", field=name)
    turns = []
    for index in range(len(messages) - 1):
        text = fields.content(name, messages, index)
        if index == 0 and first_user_text is not None:
            text = first_user_text
        turns.append((fields.role(name, messages, index), text))
    return turns


def _last_answer(fields: Fields, name: str, messages: list[Mapping]) -> str:
    if fields.role(name, messages, -1) != "assistant":
        raise RowError(f"field {name!r} ends with a {fields.role(name, messages, -1)!r} message; its last "
                       "message must be the assistant's answer", field=name)
    return fields.content(name, messages, -1, answer=True)


def _plain_pair(prompt_field: str, chosen_field: str, rejected_field: str) -> Callable[[Fields], PairParts]:
    def extract(fields: Fields) -> PairParts:
        prompt = fields.text(prompt_field)
        return (fields.system(), [("user", prompt)], fields.text(chosen_field, answer=True),
                fields.text(rejected_field, answer=True))

    return extract


def _default_pair(fields: Fields) -> PairParts:
    prompt = fields.text(fields.first_present(("prompt", "input", "question", "instruction")))
    chosen = fields.text(fields.first_present(("chosen", "chosen_response")), answer=True)
    rejected = fields.text(fields.first_present(("rejected", "rejected_response")), answer=True)
    return fields.system(), [("user", prompt)], chosen, rejected


def _argilla_chat_pair(fields: Fields) -> PairParts:
    chosen = fields.messages("chosen")
    rejected = fields.messages("rejected")
    turns = _history(fields, "chosen", chosen)
    _history(fields, "rejected", rejected)  # the same shape rules hold for the rejected conversation
    return None, turns, _last_answer(fields, "chosen", chosen), _last_answer(fields, "rejected", rejected)


def _ultra_pair(fields: Fields) -> PairParts:
    prompt = fields.text("prompt")
    chosen = fields.messages("chosen")
    rejected = fields.messages("rejected")
    turns = _history(fields, "chosen", chosen, first_user_text=prompt)
    _history(fields, "rejected", rejected)
    return fields.system(), turns, _last_answer(fields, "chosen", chosen), _last_answer(fields, "rejected", rejected)


def _nectar_pair(fields: Fields) -> PairParts:
    prompt = fields.text("prompt")
    answers = fields.value("answers")
    if not isinstance(answers, (list, tuple)) or not all(isinstance(a, Mapping) for a in answers):
        raise RowError("field 'answers' must be a list of {answer, rank} objects", field="answers")
    if len(answers) < 2:
        raise RowError(f"field 'answers' has {len(answers)} answer(s); zephyr.nectar needs at least two",
                       field="answers")
    for i, item in enumerate(answers, 1):
        rank = item.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, (int, float)):
            raise RowError(f"field 'answers' item {i} has rank {rank!r}; each answer needs a numeric rank "
                           "(1 is the best)", field="answers")
    # Rank 1 is the best answer; sorted() is stable, so ties keep their input order.
    best, runner_up = sorted(answers, key=lambda item: item["rank"])[:2]
    chosen = fields.text("answers", answer=True, value=best.get("answer"), where="the best answer (rank "
                         f"{best['rank']}) in field 'answers'")
    rejected = fields.text("answers", answer=True, value=runner_up.get("answer"), where="the second-best answer "
                           f"(rank {runner_up['rank']}) in field 'answers'")
    return None, [("user", prompt)], chosen, rejected


PAIR_MAPPINGS: dict[str, Mapping_] = {m.name: m for m in (
    Mapping_("default", (), _default_pair,
             alternatives=(("prompt", "input", "question", "instruction"), ("chosen", "chosen_response"),
                           ("rejected", "rejected_response"))),
    Mapping_("argilla", ("instruction", "chosen_response", "rejected_response"),
             _plain_pair("instruction", "chosen_response", "rejected_response")),
    Mapping_("argilla_chat", ("chosen", "rejected"), _argilla_chat_pair, optional=(),
             message_fields=("chosen", "rejected")),
    Mapping_("icr", ("input", "chosen", "rejected"), _plain_pair("input", "chosen", "rejected")),
    Mapping_("intel", ("question", "chosen", "rejected"), _plain_pair("question", "chosen", "rejected")),
    Mapping_("prompt_pairs", ("prompt", "chosen", "rejected"), _plain_pair("prompt", "chosen", "rejected")),
    Mapping_("ultra", ("prompt", "chosen", "rejected"), _ultra_pair, message_fields=("chosen", "rejected")),
    Mapping_("nectar", ("prompt", "answers"), _nectar_pair, optional=(), message_fields=("answers",)),
)}


def _plain_unpaired(prompt_field: str) -> Callable[[Fields], UnpairedParts]:
    def extract(fields: Fields) -> UnpairedParts:
        return fields.system(), [("user", fields.text(prompt_field))], fields.text("completion", answer=True)

    return extract


def _argilla_chat_unpaired(fields: Fields) -> UnpairedParts:
    """The seed doc's shape (chosen: [user], completion: [assistant]), or completion: [user, assistant]."""
    completion = fields.messages("completion")
    if len(completion) >= 2:
        turns = _history(fields, "completion", completion)
        return None, turns, _last_answer(fields, "completion", completion)
    if "chosen" not in fields.row:
        raise RowError("field 'completion' holds one message, so the user's message must be in field 'chosen' "
                       f"(the row has {', '.join(sorted(fields.row))}); or give completion as [user, assistant]",
                       field="chosen")
    user = fields.messages("chosen")
    if not user or fields.role("chosen", user, 0) != "user":
        raise RowError("field 'chosen' must hold the user's message", field="chosen")
    return None, [("user", fields.content("chosen", user, 0))], _last_answer(fields, "completion", completion)


UNPAIRED_MAPPINGS: dict[str, Mapping_] = {m.name: m for m in (
    Mapping_("argilla", ("instruction", "completion", "label"), _plain_unpaired("instruction")),
    Mapping_("argilla_chat", ("completion", "label"), _argilla_chat_unpaired, optional=("chosen",),
             message_fields=("completion",)),
    Mapping_("intel", ("question", "completion", "label"), _plain_unpaired("question")),
    Mapping_("prompt_pairs", ("prompt", "completion", "label"), _plain_unpaired("prompt")),
    Mapping_("ultra", ("prompt", "completion", "label"), _plain_unpaired("prompt")),
)}
