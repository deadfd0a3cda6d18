"""GRPO's user transforms, named `file.fn` (spec section 5).

`fn(cfg, dataset_idx=i)` returns `transform_fn` or `(transform_fn, map_kwargs)`;
`transform_fn(example)` (or `(example, tokenizer=...)` when it takes a `tokenizer`) returns
new columns. The trainer receives the original row minus `map_kwargs["remove_columns"]` (names
that are not columns are ignored; "__all__" removes every original column), updated with the
new columns. Other map_kwargs are kept on the formatter for datasets.map.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from rlhf.data.formats.base import Formatter, RowError
from rlhf.core.errors import UserCodeError
from rlhf.core.usercode import load_callable


def _as_config(cfg: Any) -> Any:
    """The run config with attribute access, as Axolotl hands its cfg to transforms."""
    if cfg is None or not isinstance(cfg, Mapping):
        return cfg
    from omegaconf import OmegaConf

    return OmegaConf.create(dict(cfg))


def build(type_name: str, tokenizer: Any, cfg: Any, dataset_idx: int,
          code_path: list[str] | tuple[str, ...] = ()) -> Formatter:
    factory = load_callable(type_name, "dataset transform", code_path)
    source = inspect.getsourcefile(factory) if inspect.isfunction(factory) else None
    try:
        result = factory(_as_config(cfg), dataset_idx=dataset_idx)
    except Exception as error:
        raise UserCodeError(f"dataset transform {type_name!r} ({source}): calling it as fn(cfg, dataset_idx="
                            f"{dataset_idx}) raised {type(error).__name__}: {error}") from None
    if callable(result):
        function, map_kwargs = result, {}
    elif (isinstance(result, tuple) and len(result) == 2 and callable(result[0])
          and isinstance(result[1], Mapping)):
        function, map_kwargs = result[0], dict(result[1])
    else:
        raise UserCodeError(f"dataset transform {type_name!r} ({source}) returned {type(result).__name__}; it must "
                            "return transform_fn or (transform_fn, map_kwargs)")
    remove = map_kwargs.pop("remove_columns", None) or []
    remove = [remove] if isinstance(remove, str) else list(remove)
    try:
        takes_tokenizer = "tokenizer" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        takes_tokenizer = False

    def convert(row: Mapping) -> dict:
        try:
            new = function(dict(row), tokenizer=tokenizer) if takes_tokenizer else function(dict(row))
        except Exception as error:
            raise RowError(f"the transform {type_name} raised {type(error).__name__}: {error}") from None
        if not isinstance(new, Mapping):
            raise RowError(f"the transform {type_name} returned {type(new).__name__}, not a dict of columns")
        kept = {} if "__all__" in remove else {k: v for k, v in row.items() if k not in remove}
        out = {**kept, **new}
        if out.get("prompt") is None:
            raise RowError(f"the transform {type_name} gave a row without a 'prompt' (columns: "
                           f"{', '.join(sorted(out))}); GRPO generates from the prompt", field="prompt")
        return out

    def map_function(example: Any) -> Any:
        return function(example, tokenizer=tokenizer) if takes_tokenizer else function(example)

    return Formatter(type_name=type_name, required_fields=(), convert=convert,
                     map_kwargs=map_kwargs, map_function=map_function, remove_columns=tuple(remove))


def is_callable_name(type_name: str) -> bool:
    module, dot, function = type_name.rpartition(".")
    return bool(dot and module and function.isidentifier())

