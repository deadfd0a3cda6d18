"""What every dataset type shares: the row error, the formatter, and reading fields safely.

A row never reaches the trainer with the text `None` in it, a number where text belongs or
an empty answer: each of those is a `RowError` naming the field, what was found and what the
type needs. The caller (rlhf.data.rows) adds the dataset, file and row number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlhf.core.errors import DataError

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
UNPAIRED_COLUMNS = ("prompt", "completion", "label")


class RowError(DataError):
    """A row this type cannot format. `empty` is True when the only problem is an empty answer
    (the user may ask to drop such rows)."""

    def __init__(self, message: str, field: str | None = None, empty: bool = False):
        super().__init__(message)
        self.field = field
        self.reason = message
        self.empty = empty


@dataclass
class Formatter:
    """A resolved dataset type: call it on a raw row to get the row the trainer receives."""

    type_name: str
    required_fields: tuple[str, ...]
    convert: Callable[[Mapping], dict]
    optional_fields: tuple[str, ...] = ()
    # A GRPO transform that asked for datasets.map arguments (batched, ...) runs through
    # datasets.map: its function, the columns to remove and those arguments.
    map_kwargs: dict[str, Any] = field(default_factory=dict)
    map_function: Callable | None = None
    remove_columns: tuple[str, ...] = ()

    def __call__(self, row: Mapping) -> dict:
        if not isinstance(row, Mapping):
            raise RowError(f"a row must be an object with named fields, got {type(row).__name__}")
        return self.convert(row)


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _shown(keys: Any) -> str:
    return ", ".join(sorted(str(k) for k in keys)) or "no fields"


class Fields:
    """Reads one row's fields for one type, with errors that say what the type needs."""

    def __init__(self, row: Mapping, type_name: str, needs: tuple[str, ...], suggest: Callable[[], list[str]]):
        self.row = row
        self.type_name = type_name
        self.needs = needs
        self.suggest = suggest

    def missing(self, name: str) -> RowError:
        suggestions = self.suggest()
        hint = f"; types whose fields this row has: {', '.join(suggestions)}" if suggestions else ""
        return RowError(f"field {name!r} is missing: {self.type_name} needs {', '.join(self.needs)}; the row has "
                        f"{_shown(self.row.keys())}{hint}", field=name)

    def value(self, name: str) -> Any:
        if name not in self.row:
            raise self.missing(name)
        return self.row[name]

    def text(self, name: str, answer: bool = False, value: Any = None, where: str | None = None) -> str:
        """A string field; answers must not be empty."""
        value = self.value(name) if value is None and where is None else value
        where = where or f"field {name!r}"
        if value is None:
            raise RowError(f"{where} is null; {self.type_name} needs text there", field=name)
        if not isinstance(value, str):
            raise RowError(f"{where} is {kind_of(value)}, not text; {self.type_name} needs text there", field=name)
        if answer and value == "":
            # The data stage adds the override that drops such rows (it knows the source's key).
            raise RowError(f"{where} is empty: an answer must have text", field=name, empty=True)
        return value

    def first_present(self, names: tuple[str, ...]) -> str:
        """The first of several alternative fields that the row has (not null)."""
        for name in names:
            if self.row.get(name) is not None:
                return name
        for name in names:
            if name in self.row:
                return name  # present but null: the null error names it
        suggestions = self.suggest()
        hint = f"; types whose fields this row has: {', '.join(suggestions)}" if suggestions else ""
        raise RowError(f"none of the fields {' / '.join(repr(n) for n in names)} is present: {self.type_name} needs "
                       f"one of them; the row has {_shown(self.row.keys())}{hint}", field=names[0])

    def system(self, name: str = "system") -> str | None:
        """The system text, or None when there is no system turn (missing, null or "")."""
        value = self.row.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise RowError(f"field {name!r} is {kind_of(value)}, not text", field=name)
        return value

    def messages(self, name: str, value: Any = None) -> list[Mapping]:
        value = self.value(name) if value is None else value
        if value is None:
            raise RowError(f"field {name!r} is null; {self.type_name} needs a list of messages there", field=name)
        if not isinstance(value, (list, tuple)) or not all(isinstance(m, Mapping) for m in value):
            raise RowError(f"field {name!r} is {kind_of(value)}, not a list of messages "
                           "({role, content} objects)", field=name)
        return list(value)

    def content(self, name: str, messages: list[Mapping], index: int, answer: bool = False) -> str:
        where = f"field {name!r} message {index + 1 if index >= 0 else len(messages) + index + 1}"
        if not -len(messages) <= index < len(messages):
            raise RowError(f"field {name!r} has {len(messages)} message(s); {self.type_name} needs at least "
                           f"{index + 1 if index >= 0 else -index}", field=name)
        message = messages[index]
        if "content" not in message:
            raise RowError(f"{where} has no 'content' (it has {_shown(message.keys())})", field=name)
        return self.text(name, answer=answer, value=message["content"], where=f"{where} content")

    def role(self, name: str, messages: list[Mapping], index: int) -> str:
        message = messages[index]
        role = message.get("role")
        if not isinstance(role, str):
            raise RowError(f"field {name!r} message {index + 1 if index >= 0 else len(messages) + index + 1} has "
                           f"no text 'role' (found {kind_of(role)})", field=name)
        return role


TRUE_WORDS, FALSE_WORDS = ("true",), ("false",)


def as_label(value: Any, name: str) -> bool:
    """A KTO label: a boolean, 0/1, or "true"/"false" in any letter case (spec section 6.6)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in TRUE_WORDS + FALSE_WORDS:
        return value.lower() in TRUE_WORDS
    raise RowError(f"field {name!r} is {value!r}: a KTO label must be true or false (a boolean, 0 or 1, or the "
                   "text true / false)", field=name)
