"""python -m rlhf.preview [--rows N] [--jsonl] [--eval] <same overrides as train>

Prints the first N rows of the training data (or of the eval data) exactly as the trainer
receives them, with token counts, without loading a model: the way to check a dataset type
before a long job. A row that cannot be formatted is reported as the trainer would report it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from rlhf.errors import RlhfError

TEXT_COLUMNS = ("prompt", "chosen", "rejected", "completion")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m rlhf.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3, help="how many rows to show (default 3)")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per row, for scripts")
    parser.add_argument("--eval", action="store_true", help="show the eval data instead of the training data")
    return parser.parse_known_args(argv)


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
    from rlhf.data.pipeline import DataReport, format_source
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


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    try:
        from rlhf.config.compose import compose_job
        from rlhf.config.validate import validate

        run = validate(compose_job(overrides))
        from rlhf.models import load_tokenizer

        tokenizer = load_tokenizer(run.model)
        items = preview_rows(run, tokenizer, args.rows, args.eval)
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.jsonl:
        for item in items:
            print(json.dumps({**item["row"], "_tokens": item["tokens"], "_source": item["source"]},
                             ensure_ascii=False))
    else:
        print_human(items, run.method.max_length)


if __name__ == "__main__":
    main()
