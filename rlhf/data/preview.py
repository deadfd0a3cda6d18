"""The first rows of a run's training (or eval) data as the trainer receives them, with token
counts, for `python -m rlhf.preview`: formatted by the data stage's own row code, so a row that
cannot be formatted is reported as the trainer would report it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rlhf.core.errors import RlhfError

TEXT_COLUMNS = ("prompt", "chosen", "rejected", "completion")


def token_counts(row: dict, tokenizer: Any) -> dict[str, int]:
    from rlhf.data.tokenize import render

    counts = {}
    for column in TEXT_COLUMNS:
        if column in row:
            text = render(row[column], tokenizer, column == "prompt")
            counts[column] = len(tokenizer(text, add_special_tokens=column == "prompt")["input_ids"])
    return counts


def preview_rows(run: Any, tokenizer: Any, rows: int, evaluation: bool = False) -> list[dict]:
    """The first `rows` formatted rows of each source, in file order, with where they came from."""
    from rlhf.data.rows import DataReport, format_source
    from rlhf.data.sources import EVAL, TRAIN, Source, dataset_sources

    role = EVAL if evaluation else TRAIN
    sources = [source for source_role, _, source in dataset_sources(run.dataset) if source_role == role]
    if not sources:
        raise RlhfError("this config has no separate eval data (dataset.eval or dataset.eval_split); "
                        "held-out rows (dataset.val_set_size) are drawn at training time")
    shown: list[dict] = []
    for index, whole in enumerate(sources):
        config = whole.config
        limited = dataclasses.replace(config, num_rows=min(rows, config.num_rows or rows))
        source = Source(limited, split=whole.split, key=whole.key)
        formatted = format_source(source, run.spec, tokenizer, index, DataReport(), code_path=run.code_path)
        if not formatted:
            raise RlhfError(f"dataset {source.label} has no rows")
        for row in formatted:
            type_name = "user_defined.default (mapping)" if hasattr(config.type, "keys") else str(config.type)
            shown.append({"source": source.label, "type": type_name, "row": row,
                          "tokens": token_counts(row, tokenizer)})
    return shown


def print_human(items: list[dict], max_length: int) -> None:
    for number, item in enumerate(items, 1):
        tokens = item["tokens"]
        total = tokens.get("prompt", 0) + max((tokens.get(c, 0) for c in ("chosen", "rejected", "completion")),
                                              default=0)
        over = f"  (over method.max_length={max_length})" if total > max_length else ""
        print(f"=== row {number}: {item['source']}, type {item['type']}, {total} tokens{over} ===")
        for column, value in item["row"].items():
            count = f": {tokens[column]} tokens" if column in tokens else ""
            if isinstance(value, str):
                ending = " (ends with a newline)" if value.endswith("\n") else ""
                print(f"--- {column}{count}{ending} ---")
                print(value, end="" if value.endswith("\n") else "\n")
            else:
                print(f"--- {column}{count} ---")
                print(json.dumps(value, ensure_ascii=False))
        print()
