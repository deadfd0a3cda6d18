"""What the config alone says about the generation eval stage, checked at validation (no torch):
whether it runs, its scorers' names, that each scorer can load (rlhf.rewards.sources), that the prompts exist and
have their column, and that a win rate has a judge."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rlhf.config.registry import register_checks
from rlhf.config.schema import SHARDED
from rlhf.core.errors import RlhfError, did_you_mean, one_of
from rlhf.rewards import sources as reward_sources

PROMPT_FILE_TYPES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
def enabled(run: Any) -> bool:
    """The stage runs when asked to, or, left unset, when it has a scorer and the method trains
    a model that generates (a reward model only scores: MethodSpec.generates)."""
    evaluate = run.evaluate
    if evaluate.enabled is not None:
        return bool(evaluate.enabled)
    return run.spec.generates and bool(evaluate.reward_funcs or evaluate.reward_models)


def why_off(run: Any) -> str | None:
    """Why the stage does not run for this run, as the log says it (None when it runs)."""
    if enabled(run):
        return None
    if run.evaluate.enabled is False:
        return "evaluate.enabled=false"
    if not run.spec.generates:
        return f"method {run.method.kind} trains a reward model, which generates nothing"
    return ("no scorer is named: evaluate.reward_funcs=[module.function] or evaluate.reward_models=[<reward "
            "model>] judges what the policy generates for the run's eval prompts")


def not_generating(run: Any) -> str:
    """Why the stage cannot run on what this method trains."""
    return (f"evaluate: method {run.method.kind} trains a reward model (a sequence classifier that scores a text "
            "with one number), which generates nothing, so the generation eval stage does not apply to it (left "
            "unset, evaluate.enabled is off for this method). To judge a policy with this reward model, give its "
            "run dir to the policy's run or to python -m rlhf.evaluate: evaluate.reward_models=[<reward run dir>]")


def function_name(source: str) -> str:
    return str(source).rpartition(".")[2]


def model_name(source: str) -> str:
    """`rm_<last path component>`: a reward model's name in the results."""
    return "rm_" + (Path(str(source).rstrip("/")).name or str(source)).replace("/", "_")


def scorer_entries(evaluate: Any) -> list[tuple[str, str, str, str, bool]]:
    """(name in the results, kind, what the config says, where it says it, models only) of every
    scorer, in config order. An entry of evaluate.reward_funcs takes any form a reward takes
    (rlhf.rewards.sources: a function, or a reward model as a dir, hub id or run dir);
    evaluate.reward_models names reward models only."""
    entries = []
    for key, models_only in (("reward_funcs", False), ("reward_models", True)):
        for index, source in enumerate(getattr(evaluate, key)):
            where = f"evaluate.{key}[{index}]"
            if not models_only and reward_sources.classify(source) == reward_sources.FUNCTION:
                entries.append((function_name(source), "reward_function", source, where, models_only))
            else:
                entries.append((model_name(source), "reward_model", source, where, models_only))
    return entries


def scorer_names(evaluate: Any) -> list[tuple[str, str, str]]:
    """(name in the results, kind, what the config says) of every scorer, in config order."""
    return [(name, kind, source) for name, kind, source, _, _ in scorer_entries(evaluate)]


def judge_name(evaluate: Any) -> str | None:
    """The scorer that judges the win rate: evaluate.judge (by name or as configured), else the first."""
    scorers = scorer_names(evaluate)
    if evaluate.judge is None:
        return scorers[0][0] if scorers else None
    for name, _, source in scorers:
        if evaluate.judge in (name, source):
            return name
    return None


def prompt_file_columns(path: Path) -> list[str]:
    """The columns of a local prompts file, read from its first row or header only."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return list(row) if isinstance(row, dict) else []
        return []
    if suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        rows = rows.get("data", rows) if isinstance(rows, dict) else rows
        return list(rows[0]) if isinstance(rows, list) and rows and isinstance(rows[0], dict) else []
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


# Keys that mean nothing when the stage is off: set while it is, they are a mistake to name.
UNUSED_WHEN_OFF = (("judge", None), ("every_n_steps", 0), ("reference", None))


def local_prompt_columns(evaluate: Any) -> list[str] | None:
    """The columns of a local prompts file (None: the eval data or a hub dataset, known later)."""
    if evaluate.prompts is None:
        return None
    path = Path(str(evaluate.prompts)).expanduser()
    if not path.is_file() or path.suffix.lower() not in PROMPT_FILE_TYPES:
        return None
    try:
        return prompt_file_columns(path)
    except (OSError, ValueError):
        return None


def check_prompts(run: Any) -> list[str]:
    evaluate, dataset = run.evaluate, run.dataset
    if evaluate.prompts is None:
        if dataset.eval or dataset.eval_split or dataset.val_set_size > 0:
            if evaluate.prompt_column != "prompt":
                return [f"evaluate.prompt_column={evaluate.prompt_column!r}: the eval data's rows hold their "
                        "prompt in 'prompt' (set evaluate.prompts=<file> to read another column of a file)"]
            return []
        return ["evaluate: the stage scores the eval data's prompts, and this run has no eval data: set "
                "evaluate.prompts=<a prompts file or hub dataset>, or give eval data (dataset.eval, "
                "dataset.eval_split or dataset.val_set_size), or evaluate.enabled=false"]
    path = Path(str(evaluate.prompts)).expanduser()
    if not path.exists():
        if reward_sources.looks_like_path(evaluate.prompts) or path.suffix.lower() in PROMPT_FILE_TYPES:
            return [f"evaluate.prompts={evaluate.prompts}: no such file"]
        return []  # a hub dataset id: its columns are checked when the job loads it
    if path.is_dir() or path.suffix.lower() not in PROMPT_FILE_TYPES:
        return [f"evaluate.prompts={evaluate.prompts}: a prompts file is one of "
                f"{one_of(sorted(PROMPT_FILE_TYPES))}"]
    try:
        columns = prompt_file_columns(path)
    except (OSError, ValueError) as error:
        return [f"evaluate.prompts={evaluate.prompts}: cannot be read: {error}"]
    problems = []
    for key in ("prompt_column", "group_by"):
        value = getattr(evaluate, key, None)
        if value is not None and value not in columns:
            problems.append(f"evaluate.{key}={value!r} is not a column of {path}{did_you_mean(value, columns)}; "
                            f"its columns: {', '.join(columns) or 'none'}")
    return problems


def check_evaluate(run: Any) -> list[str]:
    """Every problem of the stage's config, before any model loads."""
    evaluate = run.evaluate
    if not enabled(run):
        unused = [f"evaluate.{key}={getattr(evaluate, key)!r}" for key, default in UNUSED_WHEN_OFF
                  if getattr(evaluate, key) != default]
        if unused and evaluate.enabled is None and run.spec.generates:
            return [f"{', '.join(unused)} set, but the generation eval stage does not run: it has no scorer. Set "
                    "evaluate.reward_funcs=[module.function] or evaluate.reward_models=[...] (or "
                    "evaluate.enabled=true for KL and length alone, with evaluate.win_rate=false)"]
        return []
    if not run.spec.generates:
        return [not_generating(run)]
    problems = (reward_sources.check(list(evaluate.reward_funcs), "evaluate.reward_funcs", run.code_path)
                + reward_sources.check(list(evaluate.reward_models), "evaluate.reward_models", run.code_path,
                                       models_only=True))
    columns = local_prompt_columns(evaluate)
    if columns is not None and not problems:  # a local prompts file: its columns are known now
        from rlhf.core.usercode import check_reward_columns, load_reward_functions

        functions = [e for e in evaluate.reward_funcs if reward_sources.classify(e) == reward_sources.FUNCTION]
        try:
            check_reward_columns(load_reward_functions(functions, run.code_path), functions, columns,
                                 data=f"the prompts file {evaluate.prompts}")
        except RlhfError as error:
            problems.append(f"evaluate.reward_funcs: {error}")
    names = [name for name, _, _ in scorer_names(evaluate)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"evaluate: two scorers are named {', '.join(twice)} in the results: rename a function or "
                        "a reward model directory")
    if evaluate.win_rate:
        if not names:
            problems.append("evaluate.win_rate=true needs a pairwise judge, and the stage has no scorer: set "
                            "evaluate.reward_funcs=[module.function] or evaluate.reward_models=[<dir or hub id>], "
                            "or evaluate.win_rate=false")
        elif judge_name(evaluate) is None:
            problems.append(f"evaluate.judge={evaluate.judge!r} is not one of the scorers"
                            f"{did_you_mean(str(evaluate.judge), names)}; scorers: {one_of(names)}")
    elif evaluate.judge is not None:
        problems.append(f"evaluate.judge={evaluate.judge!r} is set but evaluate.win_rate=false: nothing to judge")
    if evaluate.every_n_steps and run.hardware.distributed in SHARDED:
        problems.append(f"evaluate.every_n_steps={evaluate.every_n_steps} with hardware.distributed="
                        f"{run.hardware.distributed}: a sharded model cannot generate on one rank mid-training; "
                        "the stage still runs at the end, on the saved model (evaluate.every_n_steps=0)")
    if evaluate.reference is not None and reward_sources.looks_like_path(evaluate.reference) \
            and not Path(str(evaluate.reference)).expanduser().is_dir():
        problems.append(f"evaluate.reference={evaluate.reference}: no such directory")
    return problems + check_prompts(run)


register_checks("judge", check_evaluate)
