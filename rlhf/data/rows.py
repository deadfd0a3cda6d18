"""Every row of a source through its dataset type, checked: where each row came from (file:line,
or the hub dataset's row), the row as the trainer will see it, and for the first row that fails,
one DataError naming the dataset, the file and line and the field, with the override that fixes
it when there is one.

The same row loop serves the data stage (on its workers, rlhf.data.build), the launcher's check
of every row before any job starts (rlhf.data.preflight) and the preview (rlhf.data.preview).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlhf.core.errors import ConfigError, DataError
from rlhf.data.formats import SHAPE_COLUMNS, RowError, get_formatter, reader, row_readers, suggest_types, type_options
from rlhf.data.sources import Source
from rlhf.methods.base import PAIRS, PROMPTS, UNPAIRED, MethodSpec

ROW_WORDS = {PAIRS: "a preference pair", UNPAIRED: "an unpaired row with a label", PROMPTS: "a prompt"}


SHAPE_WORDS = {PAIRS: "preference pairs (prompt, chosen, rejected)",
               UNPAIRED: "unpaired rows with a label (prompt, completion, label)",
               PROMPTS: "prompts (prompt)"}


@dataclass
class DataReport:
    rows_read: int = 0
    dropped_empty: int = 0
    dropped_long: int = 0
    truncated: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    sources: list[str] = field(default_factory=list)


def unpair(row: dict) -> list[dict]:
    """A preference pair as two KTO rows: the chosen answer desirable, the rejected not."""
    return [{"prompt": row["prompt"], "completion": row["chosen"], "label": True},
            {"prompt": row["prompt"], "completion": row["rejected"], "label": False}]


def map_with_datasets(source: Source, formatter: Any, report: DataReport) -> list[dict]:
    """A transform that asked for datasets.map arguments (batched, ...) gets datasets.map."""
    import datasets

    raw = [row for _, row in source.rows()]
    report.rows_read += len(raw)
    table = datasets.Dataset.from_list(raw)
    remove = formatter.remove_columns
    remove = table.column_names if "__all__" in remove else [c for c in remove if c in table.column_names]
    try:
        mapped = table.map(formatter.map_function, remove_columns=remove, **formatter.map_kwargs)
    except Exception as error:  # the user's transform or its map arguments
        raise DataError(f"dataset {source.label}: the transform {formatter.type_name} failed under datasets.map"
                        f"({', '.join(f'{k}={v!r}' for k, v in formatter.map_kwargs.items())}): "
                        f"{type(error).__name__}: {error}") from None
    if "prompt" not in mapped.column_names:
        raise DataError(f"dataset {source.label}: the transform {formatter.type_name} gave no 'prompt' column "
                        f"(columns: {', '.join(mapped.column_names)})")
    return mapped.to_list()


def row_hint(error: RowError, raw: Any, source: Source, method: MethodSpec, unpair: bool) -> str:
    """What to do about a row that failed, as the override to type for this source."""
    if error.empty:
        return f" (to drop such rows instead, add {source.key}.drop_empty=true)"
    if not isinstance(raw, dict) or error.field is None or error.field in raw:
        return ""  # a field that is there but wrong: the message says what it needs
    if method.shape == UNPAIRED and not unpair and {"chosen", "rejected"} <= set(raw):
        types = suggest_types(reader(method, unpair=True), raw)
        with_type = (f" (with a pair type that reads it: {' or '.join(types)})"
                     if types and source.config.type not in types else "")
        return (f". This row is a preference pair: add {source.key}.unpair=true{with_type} to train {method.kind} on "
                "its chosen (desirable) and rejected (undesirable) answers")
    readers = row_readers(raw)
    if not readers:
        return user_defined_hint(raw, source, method)
    if method.shape in {shape for shape, _ in readers}:
        return ""  # the message already lists the method's types whose fields the row has
    shape, kinds = readers[0]
    types = suggest_types(kinds[0], raw)
    with_type = f" and a type that reads it: {' or '.join(types)}" if types else ""
    return (f". This row is {ROW_WORDS[shape]} (what {' and '.join(kinds)} train{'s' if len(kinds) == 1 else ''} "
            f"on), not {ROW_WORDS[method.shape]}: train it with "
            + " or ".join(f"method={kind}" for kind in kinds) + with_type)


# The user_defined keys that name a row's fields, per row shape (rlhf.data.formats.user_defined).
USER_DEFINED_FIELDS = {PAIRS: ("field_prompt", "field_chosen", "field_rejected"),
                       UNPAIRED: ("field_prompt", "field_completion", "field_label")}


def user_defined_hint(raw: dict, source: Source, method: MethodSpec) -> str:
    """For a row whose fields no dataset type reads: how to name them with a user_defined type."""
    keys = USER_DEFINED_FIELDS.get(method.shape)
    if keys is None:
        return ""
    mapping = ", ".join(f"{key}: <column>" for key in keys)
    return (f". No dataset type reads these fields ({', '.join(sorted(map(str, raw)))}): name your columns with a "
            f"user_defined type, e.g. '{source.key}.type={{{mapping}}}' (optional: field_system and format "
            "strings; README: Dataset types)")


def format_source(source: Source, method: MethodSpec, tokenizer: Any, index: int,
                  report: DataReport, run_config: Any = None, code_path: list[str] | None = None) -> list[dict]:
    """Every row of one source as the trainer will see it; a DataError at the first bad row."""
    config = source.config
    unpair, shape = config.unpair, method.shape
    if unpair and shape != UNPAIRED:
        raise ConfigError(f"dataset {source.label}: {source.key}.unpair=true turns pairs into unpaired rows, but "
                          f"{method.kind} trains on {SHAPE_WORDS[shape]}")
    formatter = get_formatter(reader(method, unpair=unpair), config.type, tokenizer, cfg=run_config,
                              dataset_idx=index, code_path=code_path, **type_options(config))
    if formatter.map_kwargs:
        return map_with_datasets(source, formatter, report)
    return format_rows(source, formatter, method, report)


def format_rows(source: Source, formatter: Any, method: MethodSpec, report: DataReport) -> list[dict]:
    """Every row of `source` through a resolved type, in this process: the check the launching
    process makes before any job starts (check_rows_before_jobs), and the preview. The data
    stage runs the same row loop (format_range) in chunks on its workers (encode_source)."""
    where, raw, read_error = read_rows(source)
    report.rows_read += len(raw)
    formatted = format_range(raw, 0, len(raw), formatter, source.config)
    if isinstance(formatted, Failure):
        raise formatted.error(where, raw, source, method)
    report.dropped_empty += formatted.dropped_empty
    if read_error is not None:
        raise read_error
    check_shape(formatted.rows, source, formatter, method)
    return formatted.rows


def read_rows(source: Source) -> tuple[list[str], list[Any], DataError | None]:
    """Every row of a source with where it came from (file:line, or the hub dataset's row);
    a row that cannot be read ends the list, and its error is returned after the rows before
    it, to be raised only if none of them fails first (the first bad row is the one reported)."""
    where: list[str] = []
    raw: list[Any] = []
    try:
        for place, row in source.rows():
            where.append(place)
            raw.append(row)
    except DataError as error:
        return where, raw, error
    return where, raw, None


@dataclass
class Formatted:
    rows: list[dict]
    origin: list[int]  # the raw row each formatted row came from (an unpaired pair gives two)
    dropped_empty: int = 0


@dataclass
class Failure:
    """The first row of a chunk that failed: its index among the raw rows, and why."""

    index: int
    reason: str
    field: str | None = None
    empty: bool = False
    formatting: bool = True  # False: the row formatted, but cannot be tokenized as the trainer would

    def error(self, where: list[str], raw: list[Any], source: Source, method: MethodSpec) -> DataError:
        """The DataError naming the row's file and line (or hub row) and the field."""
        if not self.formatting:
            return DataError(f"{where[self.index]}: {self.reason}")
        error = RowError(self.reason, field=self.field, empty=self.empty)
        hint = row_hint(error, raw[self.index], source, method, source.config.unpair)
        return DataError(f"{where[self.index]}: {self.reason}{hint}")


def format_range(raw: list[Any], start: int, end: int, formatter: Any, config: Any) -> Formatted | Failure:
    """Rows start..end-1 through the type; the first that fails (unless an empty answer
    dropped under drop_empty) as a Failure, which travels back from a worker as plain data."""
    out = Formatted([], [])
    for index in range(start, end):
        try:
            row = formatter(raw[index])
        except RowError as error:
            if error.empty and config.drop_empty:
                out.dropped_empty += 1
                continue
            return Failure(index, error.reason, error.field, error.empty)
        for one in (unpair(row) if config.unpair else [row]):
            out.rows.append(one)
            out.origin.append(index)
    return out


def check_shape(rows: list[dict], source: Source, formatter: Any, method: MethodSpec) -> None:
    missing = [c for c in SHAPE_COLUMNS[method.shape] if rows and c not in rows[0]]
    if missing:
        raise DataError(f"dataset {source.label}: its type {formatter.type_name!r} gives rows with "
                        f"{', '.join(sorted(rows[0]))}, but this method trains on {SHAPE_WORDS[method.shape]}")
