"""OmegaConf's complaints about a value or a key, in people's words.

Composition (rlhf.launch.compose) and validation (rlhf.config.validate) both meet the same
OmegaConf errors: a value of the wrong type (`method.beta=abc`), a scalar where the schema
wants a list (`method.reward_funcs=rewards.fn`), a key written without its group
(`beta=0.2`). Each becomes one sentence that names the key and the value and, where there is
one, the override to type instead. No torch, no TRL.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import MISSING

from rlhf.core.errors import closest

# OmegaConf's conversion failures (omegaconf/nodes.py) -> what the key takes, in our words.
_CONVERSIONS = (
    (re.compile(r"could not be converted to Float"), "a number (float)"),
    (re.compile(r"could not be converted to Integer"), "a whole number (int)"),
    (re.compile(r"is not a valid bool"), "true or false (bool)"),
    (re.compile(r"^Cannot convert '\w+' to string"), "a single text value (str)"),
    (re.compile(r"could not be converted to Path"), "a path (str)"),
)
_NOT_A_LIST = re.compile(r"is not a ListConfig, list or tuple")
_NOT_A_MAPPING = re.compile(r"^Cannot assign \w+ to Dict\[|^Cannot merge DictConfig with")
_NOT_OPTIONAL = re.compile(r"is not Optional")


def shown(value: Any) -> str:
    """A value as it is written in an override (lists and mappings in Hydra's syntax)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    return str(value)


def _field_type(schema: Any, key: str) -> Any:
    """The annotated type of `schema.key` (a dataclass field), or None."""
    if not dataclasses.is_dataclass(schema):
        return None
    try:
        return typing.get_type_hints(schema).get(key)
    except Exception:  # an annotation that does not evaluate here: no type to describe
        return None


def _list_element(annotation: Any) -> Any:
    """The element type of list[X] (also inside X | None), or None when it is not a list."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return args[0] if args else Any
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            element = _list_element(arg)
            if element is not None:
                return element
    return None


def _as_list(value: Any, element: Any) -> str:
    """The override text of `value` as a one-item list of `element`s."""
    if dataclasses.is_dataclass(element):
        required = [f.name for f in dataclasses.fields(element)
                    if f.default_factory is dataclasses.MISSING and f.default in (dataclasses.MISSING, MISSING)]
        if len(required) == 1:  # the one thing an entry must have is most likely what was given
            return f"[{{{required[0]}: {shown(value)}}}]"
        return "[{" + ", ".join(f"{name}: ..." for name in required or ["key"]) + "}]"
    if isinstance(value, (list, tuple)):
        return shown(value)
    return f"[{shown(value)}]"


def value_problem(key: str, value: Any, message: str, schema: Any = None, field: str | None = None,
                  given: str | None = None) -> str | None:
    """One sentence for an OmegaConf ValidationError about `key`'s value, or None when the
    message is not one this knows. `schema`/`field`: the dataclass and field the value was
    assigned to (for what a list holds); `given`: the value as the user typed it."""
    text = given if given is not None else shown(value)
    first = message.splitlines()[0] if message else ""
    if _NOT_A_LIST.search(first):
        element = _list_element(_field_type(schema, field or key.rsplit(".", 1)[-1]))
        override = f"{key}={_as_list(value, element)}"
        return f"{key}={text} is not a list: {key} takes a list; type '{override}'"
    if _NOT_A_MAPPING.search(first):
        return (f"{key}={text} is not a mapping: {key} takes one, written as "
                f"'{key}={{name: value, ...}}'")
    if _NOT_OPTIONAL.search(first):
        return f"{key}=null: {key} cannot be null, it must have a value"
    for pattern, wanted in _CONVERSIONS:
        if pattern.search(first):
            return f"{key}={text} is not {wanted}"
    return None


def group_keys(cfg: Any) -> list[str]:
    """`<group>.<key>` for every key of every group (and node) of a composed config."""
    found = []
    for group in cfg.keys() if hasattr(cfg, "keys") else ():
        if str(group) == "hydra":
            continue
        node = cfg.get(group)
        if hasattr(node, "keys"):
            found += [f"{group}.{key}" for key in node.keys()]
    return found


def group_key_hint(key: str, cfg: Any, value: str | None = None) -> str:
    """"; did you mean 'method.beta'? A group's key is written with its group: method.beta=0.2"
    for a key written without its group,
    from the groups of the composed config `cfg`; '' when no group has a key like it."""
    candidates = group_keys(cfg)
    exact = [c for c in candidates if c.rsplit(".", 1)[-1] == key]
    if not exact:
        by_name: dict[str, list[str]] = {}
        for c in candidates:
            by_name.setdefault(c.rsplit(".", 1)[-1], []).append(c)
        near = closest(key, by_name)
        exact = by_name[near] if near else []
    if not exact:
        return ""
    meant = " or ".join(repr(c) for c in exact)
    typed = f": {exact[0]}={value}" if value is not None else ""
    return f"; did you mean {meant}? A group's key is written with its group{typed}"
