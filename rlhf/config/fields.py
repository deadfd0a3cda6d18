"""`knob()`: a schema field that carries its help text and its valid range.

Types are checked by OmegaConf when Hydra composes (a dataclass per group); ranges and
choices, which OmegaConf cannot express, live in the field's metadata and are checked by
`check_constraints` over the whole config, so every problem is reported at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rlhf.core.errors import did_you_mean, one_of

def knob(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,
         gt: float | None = None, ge: float | None = None, lt: float | None = None,
         le: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    metadata = {"help": help, "gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _describe(meta: dict) -> str:
    parts = []
    for key, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{word} {meta[key]}")
    return " and ".join(parts)


def check_value(path: str, value: Any, meta: dict) -> str | None:
    """The problem with `value` under `meta`'s constraints, or None."""
    if value is None:
        return None
    choices = meta.get("choices")
    if choices is not None:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v not in choices:
                return f"{path}={v!r} is not one of: {one_of(choices)}{did_you_mean(v, choices)}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    bad = (
        (meta.get("gt") is not None and not value > meta["gt"])
        or (meta.get("ge") is not None and not value >= meta["ge"])
        or (meta.get("lt") is not None and not value < meta["lt"])
        or (meta.get("le") is not None and not value <= meta["le"])
    )
    if bad:
        return f"{path}={value} is out of range: it must be {_describe(meta)}"
    return None


def check_constraints(instance: Any, path: str) -> list[str]:
    """Walk a dataclass instance (nested ones too) and list every constraint it breaks."""
    problems = []
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        where = f"{path}.{f.name}"
        if dataclasses.is_dataclass(value):
            problems += check_constraints(value, where)
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                problems += check_constraints(item, f"{where}[{i}]")
            continue
        problem = check_value(where, value, f.metadata)
        if problem:
            problems.append(problem)
    return problems
