"""The prompts a policy is judged on: the eval data's distinct prompts (the default), or the
rows of a prompts file or hub dataset (`evaluate.prompts`), the first `evaluate.num_prompts`.

Each prompt is rendered as the trainer sees it: a text prompt as it is (the dataset type
rendered it with the chat template already), a list of messages through the tokenizer's chat
template with the assistant's turn opened. The other columns of a row go to reward functions
by keyword, as GRPO passes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.core.errors import DataError, did_you_mean
from rlhf.judge.checks import PROMPT_FILE_TYPES


@dataclass
class Prompts:
    rows: list[dict]  # every column of each prompt row
    texts: list[str]  # each prompt rendered for generation
    column: str
    source: str  # where they came from, as the results say it
    group: str | None = None  # the column that groups the prompts (evaluate.group_by, or `category`)

    @property
    def conversational(self) -> bool:
        return bool(self.rows) and isinstance(self.rows[0][self.column], list)


def render(prompt: Any, tokenizer: Any, where: str) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"{where}: the prompt is a list of messages, and the tokenizer has no chat template "
                            "(set model.chat_template)")
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    raise DataError(f"{where}: a prompt is text or a list of {{role, content}} messages, not {str(prompt)[:80]!r}")


def load_rows(evaluate: Any, eval_data: Any) -> tuple[list[dict], str]:
    """The prompt rows and where they came from."""
    if evaluate.prompts is None:
        if eval_data is None:
            raise DataError("evaluate: the run has no eval data to take prompts from: set evaluate.prompts")
        rows, seen = [], set()
        for row in eval_data:
            key = repr(row["prompt"])
            if key not in seen:  # pairs and KTO rows repeat a prompt: each is judged once
                seen.add(key)
                rows.append(row)
            if len(rows) == evaluate.num_prompts:
                break
        return rows, f"the eval data's distinct prompts ({len(rows)})"
    import datasets

    path = Path(str(evaluate.prompts)).expanduser()
    if path.is_file():
        loaded = datasets.load_dataset(PROMPT_FILE_TYPES[path.suffix.lower()], data_files=str(path), split="train")
        where = str(path)
    else:
        from rlhf.core import hub

        try:
            loaded = datasets.load_dataset(str(evaluate.prompts), split=evaluate.split)
        except Exception as error:  # the hub's own errors differ by cause; one message names the source
            state = hub.datasets_state()
            why = "" if state.online else f" ({state.why})"
            raise DataError(f"evaluate.prompts={evaluate.prompts}: cannot load it as a hub dataset, split "
                            f"{evaluate.split!r}{why}: {str(error).splitlines()[0] if str(error) else error!r}") \
                from None
        where = f"{evaluate.prompts} (split {evaluate.split})"
    if evaluate.prompt_column not in loaded.column_names:
        raise DataError(f"evaluate.prompt_column={evaluate.prompt_column!r} is not a column of {where}"
                        f"{did_you_mean(evaluate.prompt_column, loaded.column_names)}; its columns: "
                        f"{', '.join(loaded.column_names)}")
    rows = loaded.select(range(min(evaluate.num_prompts, len(loaded)))).to_list()
    if not rows:
        raise DataError(f"evaluate.prompts={evaluate.prompts}: {where} has no rows")
    return rows, f"{where} ({len(rows)} rows)"


DEFAULT_GROUP = "category"


def grouping(evaluate: Any, rows: list[dict], source: str) -> str | None:
    """The column whose values group the prompts: `evaluate.group_by`, which every row must
    have, or `category` when the rows have one (None: no groups)."""
    named = getattr(evaluate, "group_by", None)
    if named is None:
        return DEFAULT_GROUP if rows and all(DEFAULT_GROUP in row for row in rows) else None
    columns = list(rows[0]) if rows else []
    missing = next((i for i, row in enumerate(rows) if named not in row), None)
    if missing is not None:
        raise DataError(f"evaluate.group_by={named!r}: row {missing} of {source} has no such column"
                        f"{did_you_mean(named, columns)}; its columns: {', '.join(map(str, columns))}")
    return named


def load(evaluate: Any, eval_data: Any, tokenizer: Any) -> Prompts:
    """The prompts of the stage.

    Args:
        evaluate: the run's EvaluateConfig.
        eval_data: the run's eval rows (the prompts when evaluate.prompts is None).
        tokenizer: renders a list of messages with its chat template.

    Returns:
        Prompts: the rows, their rendered texts, the prompt column, where they came from and
        the column that groups them.
    """
    rows, source = load_rows(evaluate, eval_data)
    column = evaluate.prompt_column if evaluate.prompts is not None else "prompt"
    texts = [render(row[column], tokenizer, f"{source}, prompt {i}") for i, row in enumerate(rows)]
    return Prompts(rows=rows, texts=texts, column=column, source=source, group=grouping(evaluate, rows, source))
