"""Dataset types: from a raw row to exactly the row the trainer receives.

    format_row(method, type, row, tokenizer=None, **options) -> dict

`type` is the string a config holds (`chatml.intel`, `llama3.ultra`, `zephyr.nectar`,
`chat_template.default`, `user_defined.default`, a GRPO transform `file.fn`), a mapping
(user_defined.default with those keys), or None (the rows already hold the trainer's
columns). A type is a family (the template) times a mapping (the fields); the method picks
the table: dpo, ipo and simpo share the DPO types, kto and orpo have their own, grpo takes
user transforms. `../shared/spec/formats.md` is the contract, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlhf.data.formats import chat_template, transform, user_defined
from rlhf.data.formats.base import PAIR_COLUMNS, UNPAIRED_COLUMNS, Fields, Formatter, RowError, as_label
from rlhf.data.formats.families import FAMILIES
from rlhf.data.formats.mappings import PAIR_MAPPINGS, UNPAIRED_MAPPINGS
from rlhf.errors import ConfigError, did_you_mean, one_of
from rlhf.usercode import load_callable

__all__ = ["RowError", "Formatter", "format_row", "get_formatter", "check_type", "valid_types", "suggest_types"]

# method -> the table of types it reads; "ipo" and "simpo" train on the DPO table.
TABLES = {"dpo": "dpo", "ipo": "dpo", "simpo": "dpo", "cpo": "dpo", "kto": "kto", "orpo": "orpo", "grpo": "grpo"}
OUTPUT = {"dpo": PAIR_COLUMNS, "orpo": PAIR_COLUMNS, "kto": UNPAIRED_COLUMNS, "grpo": ("prompt",)}

# chat_template.<mapping> per table: builder(tokenizer, type_name, options) -> (required, extract)
CHAT_TEMPLATE = {
    "dpo": {"default": chat_template.default, "argilla_chat": chat_template.argilla_chat},
    "orpo": {"argilla": chat_template.orpo_argilla},
}
# user_defined.<mapping> per table: builder(spec) -> (required, optional, extract)
USER_DEFINED = {"dpo": {"default": user_defined.pairs}, "kto": {"default": user_defined.unpaired}}
# Built-in family names: `chatml.x` is never a user file, even if a chatml.py exists.
BUILTIN_FAMILIES = (*FAMILIES, "chat_template", "user_defined")


def _table(method: str) -> str:
    if method not in TABLES:
        raise ConfigError(f"no dataset types for method {method!r}; methods: {one_of(TABLES)}")
    return TABLES[method]


def _string_types(table: str) -> list[str]:
    names = []
    for family in FAMILIES.values():
        names += [f"{family.name}.{m}" for m in family.mappings.get(table, ())]
    return names


def valid_types(method: str) -> list[str]:
    """The canonical type names a method accepts (GRPO: user transforms only)."""
    table = _table(method)
    names = _string_types("dpo" if table == "orpo" else table)
    names += [f"chat_template.{m}" for m in CHAT_TEMPLATE.get(table, {})]
    if table == "orpo":
        names += [f"chat_template.{m}" for m in CHAT_TEMPLATE["dpo"]]
    names += [f"user_defined.{m}" for m in USER_DEFINED.get("dpo" if table == "orpo" else table, {})]
    return sorted(set(names))


def _mapping_table(table: str) -> dict:
    return UNPAIRED_MAPPINGS if table == "kto" else PAIR_MAPPINGS


def suggest_types(method: str, row: Mapping) -> list[str]:
    """The string-family types whose fields this row has (for 'missing field' errors)."""
    table = _table(method)
    if table == "grpo":
        return []
    mappings = _mapping_table(table)
    fitting = {name for name, mapping in mappings.items() if mapping.fits(row)}
    return [t for t in valid_types(method) if t.split(".", 1)[0] in FAMILIES and t.split(".", 1)[1] in fitting]


def _canonical(type_name: str) -> tuple[str, str]:
    family, dot, mapping = type_name.partition(".")
    return family, (mapping if dot else "default")


def _unknown(method: str, type_name: str, why: str = "") -> ConfigError:
    valid = valid_types(method)
    if _table(method) == "grpo":
        return ConfigError(f"dataset type {type_name!r} is not a GRPO transform: GRPO takes a user transform "
                           "written file.fn (e.g. rewards.oai_gsm8k_transform), or no type when the rows already "
                           "hold a prompt")
    return ConfigError(f"dataset type {type_name!r} is not a {method} type{why}{did_you_mean(type_name, valid)}; "
                       f"valid types for {method}: {one_of(valid)}")


def _passthrough(method: str, table: str) -> Formatter:
    columns = OUTPUT[table]

    def convert(row: Mapping) -> dict:
        missing = [c for c in columns if c not in row]
        if missing:
            raise RowError(f"the dataset has no type, so rows must already hold {', '.join(columns)}; this row has "
                           f"{', '.join(sorted(row)) or 'no fields'} (set dataset.type; types whose fields it has: "
                           f"{', '.join(suggest_types(method, row)) or 'none'})", field=missing[0])
        if table == "grpo":
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

    return Formatter("none", columns, columns, convert)


def _fields_reader(method: str, type_name: str, needs: tuple[str, ...]) -> Callable[[Mapping], Fields]:
    return lambda row: Fields(row, type_name, needs, lambda: suggest_types(method, row))


def _string_family(method: str, table: str, family_name: str, mapping_name: str) -> Formatter:
    family = FAMILIES[family_name]
    mapping_table = "dpo" if table == "orpo" else table
    mapping = _mapping_table(mapping_table)[mapping_name]
    type_name = f"{family_name}.{mapping_name}"
    needs = mapping.required or tuple("/".join(group) for group in mapping.alternatives)
    read = _fields_reader(method, type_name, needs)
    if mapping_table == "kto":
        def convert(row: Mapping) -> dict:
            fields = read(row)
            system, turns, completion = mapping.extract(fields)
            label = as_label(fields.value("label"), "label")
            return {"prompt": family.prompt(system, turns), "completion": family.answer(completion), "label": label}
    else:
        def convert(row: Mapping) -> dict:
            system, turns, chosen, rejected = mapping.extract(read(row))
            return {"prompt": family.prompt(system, turns), "chosen": family.answer(chosen),
                    "rejected": family.answer(rejected)}
    return Formatter(type_name, needs, OUTPUT[table], convert, optional_fields=mapping.optional)


def _check_options(type_name: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in options:
        if name not in allowed:
            raise ConfigError(f"dataset option {name!r} does not apply to type {type_name}"
                              + (f"; its options: {one_of(allowed)}" if allowed else " (it takes no options)"))


def _resolve(method: str, type: Any, options: dict[str, Any]) -> tuple[str, str, str, Any]:
    """(table, family, mapping, user_defined spec) of a type as written in a config; checks the
    name and the options, and reads no data."""
    table = _table(method)
    if hasattr(type, "items") and not isinstance(type, Mapping):  # an OmegaConf node
        from omegaconf import OmegaConf

        type = OmegaConf.to_container(type)
    if type is None:
        _check_options("none", options, ())
        return table, "none", "", None
    spec = None
    if isinstance(type, Mapping):
        spec, type = type, "user_defined.default"
    if not isinstance(type, str) or not type:
        raise ConfigError(f"dataset type {type!r} must be a name (family.mapping) or a user_defined mapping")
    family, mapping = _canonical(type)
    if family in FAMILIES:
        if mapping not in FAMILIES[family].mappings.get("dpo" if table == "orpo" else table, ()):
            raise _unknown(method, type)
        _check_options(f"{family}.{mapping}", options, ())
    elif family == "chat_template":
        if mapping not in _chat_template_builders(table):
            raise _unknown(method, type)
        _check_options(f"chat_template.{mapping}", options, chat_template.OPTIONS)
    elif family == "user_defined":
        if mapping not in USER_DEFINED.get("dpo" if table == "orpo" else table, {}):
            raise _unknown(method, type)
        _check_options(f"user_defined.{mapping}", options, ())
    elif not (table == "grpo" and transform.is_callable_name(type)):
        raise _unknown(method, type)
    else:
        family, mapping = "transform", type
    return table, family, mapping, spec


def _chat_template_builders(table: str) -> dict:
    return {**CHAT_TEMPLATE.get(table, {}), **(CHAT_TEMPLATE["dpo"] if table == "orpo" else {})}


def check_type(method: str, type: Any, code_path: list[str] | tuple[str, ...] = (), **options: Any) -> None:
    """Check a configured type without data or tokenizer: its name for the method, its options,
    a user_defined mapping's keys and formats, and that a GRPO transform can be imported."""
    options = {k: v for k, v in options.items() if v is not None}
    table, family, mapping, spec = _resolve(method, type, options)
    if family == "user_defined":
        USER_DEFINED["dpo" if table == "orpo" else table][mapping](spec)
    elif family == "transform":
        load_callable(mapping, "dataset transform", code_path)


def get_formatter(method: str, type: Any = None, tokenizer: Any = None, *, cfg: Any = None,
                  dataset_idx: int = 0, code_path: list[str] | tuple[str, ...] = (), **options: Any) -> Formatter:
    """Resolve a dataset type once; the formatter formats many rows."""
    options = {k: v for k, v in options.items() if v is not None}
    table, family, mapping, spec = _resolve(method, type, options)
    if family == "none":
        return _passthrough(method, table)
    if family in FAMILIES:
        return _string_family(method, table, family, mapping)
    if family == "chat_template":
        type_name = f"chat_template.{mapping}"
        required, extract = _chat_template_builders(table)[mapping](tokenizer, type_name, options)
        read = _fields_reader(method, type_name, required)
        return Formatter(type_name, required, OUTPUT[table], lambda row: extract(read(row)))
    if family == "user_defined":
        type_name = f"user_defined.{mapping}"
        required, optional, extract = USER_DEFINED["dpo" if table == "orpo" else table][mapping](spec)
        read = _fields_reader(method, type_name, required)
        return Formatter(type_name, required, OUTPUT[table], lambda row: extract(read(row)),
                         optional_fields=optional)
    return transform.build(mapping, tokenizer, cfg, dataset_idx, code_path)


def format_row(method: str, type: Any, row: Mapping, tokenizer: Any = None, **options: Any) -> dict:
    """The row exactly as the trainer receives it (see get_formatter for the arguments)."""
    return get_formatter(method, type, tokenizer, **options)(row)
