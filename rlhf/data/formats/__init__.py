"""Dataset types: from a raw row to exactly the row the trainer receives.

    format_row(method, type, row, tokenizer=None, **options) -> dict

`type` is the string a config holds (`chatml.intel`, `llama3.ultra`, `zephyr.nectar`,
`chat_template.default`, `user_defined.default`, a GRPO transform `file.fn`), a mapping
(user_defined.default with those keys), or None (the rows already hold the trainer's
columns). A type is a family (the template) times a mapping (the fields).

`method` is a registered method or one of its presets (`dpo`, `ipo`, `kto`, ...), or its
`MethodSpec`. The spec decides which types it reads: those of its row shape (preference
pairs, unpaired rows with a label, prompts) plus any of its own (`MethodSpec.extra_types`,
ORPO's `chat_template.argilla`). Nothing here knows a method by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlhf.data.formats import chat_template, transform, user_defined
from rlhf.data.formats.base import PAIR_COLUMNS, UNPAIRED_COLUMNS, Fields, Formatter, RowError, as_label
from rlhf.data.formats.families import FAMILIES
from rlhf.data.formats.mappings import PAIR_MAPPINGS, UNPAIRED_MAPPINGS
from rlhf.core.errors import ConfigError, did_you_mean, one_of
from rlhf.methods.base import PAIRS, PROMPTS, UNPAIRED, MethodSpec, lookup
from rlhf.core.usercode import load_callable

__all__ = ["RowError", "Formatter", "Reader", "reader", "format_row", "get_formatter", "check_type",
           "needs_tokenizer", "type_family", "valid_types", "suggest_types", "row_readers", "type_options",
           "SHAPE_COLUMNS"]

SHAPE_COLUMNS = {PAIRS: PAIR_COLUMNS, UNPAIRED: UNPAIRED_COLUMNS, PROMPTS: ("prompt",)}
FIELD_MAPPINGS = {PAIRS: PAIR_MAPPINGS, UNPAIRED: UNPAIRED_MAPPINGS}


@dataclass(frozen=True)
class TemplateType:
    """A chat_template.<mapping>: builder(tokenizer, type_name, options) -> (required, extract)."""

    shape: str
    build: Callable
    # Read only by methods that list it in MethodSpec.extra_types.
    opt_in: bool = False


CHAT_TEMPLATE = {
    "default": TemplateType(PAIRS, chat_template.default),
    "argilla_chat": TemplateType(PAIRS, chat_template.argilla_chat),
    # ORPO's Axolotl type: the answer keeps the template's end-of-turn newline.
    "argilla": TemplateType(PAIRS, chat_template.orpo_argilla, opt_in=True),
}
# user_defined.<mapping> per shape: builder(spec) -> (required, optional, extract)
USER_DEFINED = {PAIRS: {"default": user_defined.pairs}, UNPAIRED: {"default": user_defined.unpaired}}


@dataclass(frozen=True)
class Reader:
    """Which rows a method reads: its name (for messages), its row shape, its own extra types."""

    name: str
    shape: str
    extra_types: tuple[str, ...] = ()


def reader(method: str | MethodSpec | Reader, unpair: bool = False) -> Reader:
    """The reader of a method (by name or spec). `unpair`: the source holds preference pairs
    that the data stage turns into unpaired rows, so it reads the pair types."""
    if isinstance(method, Reader):
        return method
    spec = method if isinstance(method, MethodSpec) else lookup(method)
    name = method if isinstance(method, str) else spec.kind
    if unpair:
        return Reader(f"{name} (unpair=true: preference pairs)", PAIRS)
    return Reader(name, spec.shape, spec.extra_types)


def _template_types(read: Reader) -> dict[str, TemplateType]:
    return {name: t for name, t in CHAT_TEMPLATE.items()
            if t.shape == read.shape and (not t.opt_in or f"chat_template.{name}" in read.extra_types)}


def valid_types(method: str | MethodSpec | Reader) -> list[str]:
    """The canonical type names a method accepts (prompt methods: user transforms only)."""
    read = reader(method)
    names = [f"{family.name}.{m}" for family in FAMILIES.values() for m in family.mappings.get(read.shape, ())]
    names += [f"chat_template.{m}" for m in _template_types(read)]
    names += [f"user_defined.{m}" for m in USER_DEFINED.get(read.shape, {})]
    return sorted(set(names))


def suggest_types(method: str | MethodSpec | Reader, row: Mapping) -> list[str]:
    """The string-family types whose fields this row has (for 'missing field' errors)."""
    read = reader(method)
    if read.shape not in FIELD_MAPPINGS:
        return []
    fitting = {name for name, mapping in FIELD_MAPPINGS[read.shape].items() if mapping.fits(row)}
    return [t for t in valid_types(read) if t.split(".", 1)[0] in FAMILIES and t.split(".", 1)[1] in fitting]


def row_readers(row: Mapping) -> list[tuple[str, list[str]]]:
    """The row shapes this row is laid out as (its fields fit one of the shape's types, or it
    holds the shape's trainer columns), each with the registered methods that train on it.
    For a row a method cannot read: which method can (preference pairs, unpaired rows)."""
    from rlhf.methods import METHODS

    found = []
    for shape, mappings in FIELD_MAPPINGS.items():
        if any(m.fits(row) for m in mappings.values()) or all(c in row for c in SHAPE_COLUMNS[shape]):
            kinds = sorted(spec.kind for spec in METHODS.values() if spec.shape == shape)
            if kinds:
                found.append((shape, kinds))
    return found


def type_options(source: Any) -> dict[str, Any]:
    """The chat_template options a source config sets (field_messages, roles, ...)."""
    from omegaconf import OmegaConf

    options = {}
    for name in chat_template.OPTIONS:
        value = getattr(source, name)
        if value is not None:
            options[name] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return options


def _canonical(type_name: str) -> tuple[str, str]:
    family, dot, mapping = type_name.partition(".")
    return family, (mapping if dot else "default")


def _unknown(read: Reader, type_name: str) -> ConfigError:
    if read.shape == PROMPTS:
        return ConfigError(f"dataset type {type_name!r} is not a {read.name} transform: {read.name} trains on "
                           "prompts and takes a user transform written file.fn (e.g. rewards.oai_gsm8k_transform), "
                           f"or no type when the rows already hold a prompt{_read_by_others(type_name)}")
    valid = valid_types(read)
    return ConfigError(f"dataset type {type_name!r} is not a {read.name} type{did_you_mean(type_name, valid)}; "
                       f"valid types for {read.name}: {one_of(valid)}")


def _read_by_others(type_name: str) -> str:
    """For a prompt method given a type of another row shape (chatml.intel): what rows that type
    reads, so the message can say they hold no `prompt` and what to do."""
    family, mapping = _canonical(type_name)
    for shape in (PAIRS, UNPAIRED):
        if family in FAMILIES and mapping in FAMILIES[family].mappings.get(shape, ()):
            fields = FIELD_MAPPINGS[shape][mapping].required
            return (f". {type_name} reads {'preference pairs' if shape == PAIRS else 'unpaired rows'}: rows with "
                    f"{', '.join(fields)}, which hold no `prompt`: write a transform that returns "
                    "{'prompt': ...} from such a row (conf/rewards.py's oai_gsm8k_transform maps `question`), or "
                    f"train the rows with a method of their shape")
    return ""


def _passthrough(read: Reader) -> Formatter:
    columns = SHAPE_COLUMNS[read.shape]

    def convert(row: Mapping) -> dict:
        missing = [c for c in columns if c not in row]
        if missing:
            raise RowError(f"the dataset has no type, so rows must already hold {', '.join(columns)}; this row has "
                           f"{', '.join(sorted(row)) or 'no fields'} (set dataset.type; types whose fields it has: "
                           f"{', '.join(suggest_types(read, row)) or 'none'})", field=missing[0])
        if read.shape == PROMPTS:
            return dict(row)  # every column reaches the reward functions
        out = {c: row[c] for c in columns}
        for column in columns:
            if column == "label":
                out[column] = as_label(row[column], column)
            elif out[column] is None:
                raise RowError(f"field {column!r} is null", field=column)
            elif isinstance(out[column], str) and out[column] == "" and column != "prompt":
                raise RowError(f"field {column!r} is empty: an answer must have text", field=column, empty=True)
        return out

    return Formatter("none", columns, convert)


def _fields_reader(read: Reader, type_name: str, needs: tuple[str, ...]) -> Callable[[Mapping], Fields]:
    return lambda row: Fields(row, type_name, needs, lambda: suggest_types(read, row))


def _string_family(read: Reader, family_name: str, mapping_name: str) -> Formatter:
    family = FAMILIES[family_name]
    mapping = FIELD_MAPPINGS[read.shape][mapping_name]
    type_name = f"{family_name}.{mapping_name}"
    needs = mapping.required or tuple("/".join(group) for group in mapping.alternatives)
    fields_of = _fields_reader(read, type_name, needs)
    if read.shape == UNPAIRED:
        def convert(row: Mapping) -> dict:
            fields = fields_of(row)
            system, turns, completion = mapping.extract(fields)
            label = as_label(fields.value("label"), "label")
            return {"prompt": family.prompt(system, turns), "completion": family.answer(completion), "label": label}
    else:
        def convert(row: Mapping) -> dict:
            system, turns, chosen, rejected = mapping.extract(fields_of(row))
            return {"prompt": family.prompt(system, turns), "chosen": family.answer(chosen),
                    "rejected": family.answer(rejected)}
    return Formatter(type_name, needs, convert, optional_fields=mapping.optional)


def _check_options(type_name: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in options:
        if name not in allowed:
            raise ConfigError(f"dataset option {name!r} does not apply to type {type_name}"
                              + (f"; its options: {one_of(allowed)}" if allowed else " (it takes no options)"))


@dataclass(frozen=True)
class _Resolved:
    read: Reader
    family: str  # a FAMILIES name, "chat_template", "user_defined", "transform" or "none"
    mapping: str
    spec: Any = None  # a user_defined mapping given inline


def _resolve(method: str | MethodSpec | Reader, type: Any, options: dict[str, Any]) -> _Resolved:
    """A type as written in a config, checked (its name for the method, its options) without
    reading any data."""
    read = reader(method)
    if hasattr(type, "items") and not isinstance(type, Mapping):  # an OmegaConf node
        from omegaconf import OmegaConf

        type = OmegaConf.to_container(type)
    if type is None:
        _check_options("none", options, ())
        return _Resolved(read, "none", "")
    spec = None
    if isinstance(type, Mapping):
        spec, type = type, "user_defined.default"
    if not isinstance(type, str) or not type:
        raise ConfigError(f"dataset type {type!r} must be a name (family.mapping) or a user_defined mapping")
    family, mapping = _canonical(type)
    if family in FAMILIES:
        if mapping not in FAMILIES[family].mappings.get(read.shape, ()):
            raise _unknown(read, type)
        _check_options(f"{family}.{mapping}", options, ())
    elif family == "chat_template":
        if mapping not in _template_types(read):
            raise _unknown(read, type)
        _check_options(f"chat_template.{mapping}", options, chat_template.OPTIONS)
    elif family == "user_defined":
        if mapping not in USER_DEFINED.get(read.shape, {}):
            raise _unknown(read, type)
        _check_options(f"user_defined.{mapping}", options, ())
    elif read.shape == PROMPTS and transform.is_callable_name(type):
        family, mapping = "transform", type
    else:
        raise _unknown(read, type)
    return _Resolved(read, family, mapping, spec)


def check_type(method: str | MethodSpec | Reader, type: Any, code_path: list[str] | tuple[str, ...] = (),
               **options: Any) -> None:
    """Check a configured type without data or tokenizer: its name for the method, its options,
    a user_defined mapping's keys and formats, and that a transform can be imported."""
    options = {k: v for k, v in options.items() if v is not None}
    resolved = _resolve(method, type, options)
    if resolved.family == "user_defined":
        USER_DEFINED[resolved.read.shape][resolved.mapping](resolved.spec)
    elif resolved.family == "transform":
        load_callable(resolved.mapping, "dataset transform", code_path)


def type_family(method: str | MethodSpec | Reader, type: Any, **options: Any) -> str:
    """What formats a configured type's rows: a FAMILIES name (chatml, llama3, zephyr),
    "chat_template", "user_defined", "transform" or "none" (no type)."""
    return _resolve(method, type, {k: v for k, v in options.items() if v is not None}).family


def needs_tokenizer(method: str | MethodSpec | Reader, type: Any, **options: Any) -> bool:
    """Whether formatting this type's rows needs the model's tokenizer: chat_template.* renders
    with it and a user transform may take it (and is user code, which may import anything). The
    string families, user_defined and untyped rows are plain Python on the row alone."""
    return type_family(method, type, **options) in ("chat_template", "transform")


def get_formatter(method: str | MethodSpec | Reader, type: Any = None, tokenizer: Any = None, *, cfg: Any = None,
                  dataset_idx: int = 0, code_path: list[str] | tuple[str, ...] = (), **options: Any) -> Formatter:
    """A dataset type resolved once, for formatting many rows.

    Args:
        method: the method the rows are for (its name, MethodSpec, or a Reader), which decides
            the row shape (pairs, unpaired rows, prompts) and the types it accepts.
        type: the dataset type: `family.mapping` (chatml.intel), `chat_template.<mapping>`,
            `user_defined.default` with its mapping, a user transform `file.fn`, or None (the
            rows hold the trainer's columns already).
        tokenizer: the run's tokenizer (chat_template types and transforms use it).
        cfg, dataset_idx, code_path: what a user transform is called with and found through.
        options: the source's chat_template options (field_messages, roles, ...).

    Returns:
        A Formatter: call it on a raw row to get the row the trainer receives.

    Raises:
        ConfigError: the type is unknown or does not fit the method (valid ones listed).
    """
    options = {k: v for k, v in options.items() if v is not None}
    resolved = _resolve(method, type, options)
    read, family, mapping = resolved.read, resolved.family, resolved.mapping
    if family == "none":
        return _passthrough(read)
    if family in FAMILIES:
        return _string_family(read, family, mapping)
    if family == "chat_template":
        type_name = f"chat_template.{mapping}"
        required, extract = CHAT_TEMPLATE[mapping].build(tokenizer, type_name, options)
        fields_of = _fields_reader(read, type_name, required)
        return Formatter(type_name, required, lambda row: extract(fields_of(row)))
    if family == "user_defined":
        type_name = f"user_defined.{mapping}"
        required, optional, extract = USER_DEFINED[read.shape][mapping](resolved.spec)
        fields_of = _fields_reader(read, type_name, required)
        return Formatter(type_name, required, lambda row: extract(fields_of(row)),
                         optional_fields=optional)
    return transform.build(mapping, tokenizer, cfg, dataset_idx, code_path)


def format_row(method: str | MethodSpec | Reader, type: Any, row: Mapping, tokenizer: Any = None,
               **options: Any) -> dict:
    """One raw row formatted exactly as the trainer receives it.

    Args:
        method, type, tokenizer, options: as get_formatter takes them.
        row: the raw row (a mapping of its fields).

    Returns:
        The trainer's row: prompt, chosen and rejected (pairs); prompt, completion and label
        (unpaired rows); prompt and its other columns (prompts).

    Raises:
        RowError: the row cannot be formatted, naming the field and what it needs.
        ConfigError: the type is unknown or does not fit the method.
    """
    return get_formatter(method, type, tokenizer, **options)(row)
