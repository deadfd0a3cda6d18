"""python -m rlhf.preview [--rows N] [--jsonl] [--eval] <same overrides as train>

Prints the first N rows of the training data (or of the eval data) exactly as the trainer
receives them, with token counts, without loading a model: the way to check a dataset type
before a long job. A row that cannot be formatted is reported as the trainer would report it.
"""

from __future__ import annotations

import argparse
import json
import sys

from rlhf.core.errors import RlhfError
from rlhf.data.preview import preview_rows, print_human


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m rlhf.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3, help="how many rows to show (default 3)")
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per row, for scripts")
    parser.add_argument("--eval", action="store_true", help="show the eval data instead of the training data")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    """The command: compose and validate the overrides, load the tokenizer, print the rows."""
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    try:
        from rlhf.config.validate import validate
        from rlhf.launch.compose import compose_job

        run = validate(compose_job(overrides))
        from rlhf.models.loading import load_tokenizer

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
