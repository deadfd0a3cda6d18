"""Loading user code named in a config as `module.function` (reward functions, transforms).

The module is looked up in the current directory first, then on `sys.path`. Anything that
goes wrong is a `UserCodeError` naming the string, where it was looked for and why.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.core.errors import UserCodeError

# Directories searched before sys.path, after the current directory and the run's code_path.
# The launching process adds the config directory, so a rewards.py beside the config is
# found; it also writes it into each job's code_path, so every job and rank finds it too.
EXTRA_DIRS: list[Path] = []


def search_dirs(dirs: list[str] | tuple[str, ...] = ()) -> list[Path]:
    candidates = [Path.cwd(), *(Path(d) for d in dirs), *EXTRA_DIRS]
    return list(dict.fromkeys(d.resolve() for d in candidates))


def split_name(name: str, what: str) -> tuple[str, str]:
    module, dot, function = str(name).rpartition(".")
    if not dot or not module or not function:
        raise UserCodeError(f"{what} {name!r} must be written module.function (e.g. rewards.my_reward): "
                            "the module path, a dot, then the function name")
    return module, function


def import_module(module: str, name: str, what: str, code_path: list[str] | tuple[str, ...] = ()) -> Any:
    dirs = [str(d) for d in search_dirs(code_path)]
    added = [d for d in dirs if d not in sys.path]
    sys.path[:0] = added
    try:
        found = importlib.util.find_spec(module)
        if found is None:
            raise UserCodeError(
                f"{what} {name!r}: no module {module!r} ({module.replace('.', '/')}.py) in {', '.join(dirs)} "
                "or on the Python path")
        return importlib.import_module(module)
    except UserCodeError:
        raise
    except ModuleNotFoundError as error:
        raise UserCodeError(f"{what} {name!r}: importing {module!r} failed: {error}") from None
    except Exception as error:  # the user's module raised while importing
        raise UserCodeError(f"{what} {name!r}: importing {module!r} raised {type(error).__name__}: {error}") from None
    finally:
        for d in added:
            if d in sys.path:
                sys.path.remove(d)


def module_file(module: Any) -> str:
    return getattr(module, "__file__", None) or repr(module)


def load_callable(name: str, what: str, code_path: list[str] | tuple[str, ...] = ()) -> Callable:
    module_name, function = split_name(name, what)
    module = import_module(module_name, name, what, code_path)
    if not hasattr(module, function):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", module.__name__) == module.__name__)  # not its imports
        raise UserCodeError(f"{what} {name!r}: {module_file(module)} has no {function!r}"
                            + (f"; it defines: {', '.join(public)}" if public else ""))
    target = getattr(module, function)
    if not callable(target):
        raise UserCodeError(f"{what} {name!r}: {function!r} in {module_file(module)} is a "
                            f"{type(target).__name__}, not a function")
    return target


def check_reward_signature(function: Callable, name: str) -> None:
    """TRL calls reward functions as f(prompts=..., completions=..., **columns)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return  # a builtin or C function: let TRL call it
    kinds = {p.kind for p in parameters.values()}
    named = {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    problems = []
    if "completions" not in named:
        problems.append("it has no 'completions' parameter")
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        problems.append("it takes no **kwargs (TRL also passes prompts, completion_ids, trainer_state and every "
                        "dataset column by keyword)")
    if problems:
        raise UserCodeError(
            f"reward function {name!r} has the wrong signature {inspect.signature(function)}: "
            + "; ".join(problems) + ". It must accept (prompts, completions, **kwargs) or (completions, **kwargs)")


# What TRL passes to every reward function besides the dataset's columns.
TRL_REWARD_ARGUMENTS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"}


def check_reward_columns(functions: list[Callable], names: list[str], columns: list[str],
                         data: str = "the training data") -> None:
    """Every parameter a reward function requires is a column of the prepared data (TRL passes
    the columns by keyword), so a missing one is named now, not by a TypeError mid-training.
    `data` names the rows in the message."""
    for function, name in zip(functions, names):
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            continue
        required = [p.name for p in parameters if p.default is p.empty and p.name not in TRL_REWARD_ARGUMENTS
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [p for p in required if p not in columns]
        if missing:
            raise UserCodeError(f"reward function {name!r} needs the column(s) {', '.join(missing)}, and "
                                f"{data} has only: {', '.join(columns)}. Choose a "
                                "dataset (or transform) that provides them, or a reward for this data")


def _checked(function: Callable, name: str) -> Callable:
    """The reward function, with its result checked: one number (or None) per completion."""
    if inspect.iscoroutinefunction(function):
        return function  # TRL awaits these itself; their results are not seen here

    @functools.wraps(function)
    def reward(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        completions = kwargs.get("completions", args[1] if len(args) > 1 else args[0] if args else None)
        try:
            ok = len(result) == len(completions) and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or hasattr(v, "item")
                for v in result)
        except TypeError:
            ok = False
        if not ok:
            shown = repr(result)[:200]
            raise UserCodeError(f"reward function {name!r} returned {shown}: it must return a list with one "
                                f"number (or None) per completion ({len(completions or [])} here)")
        return result

    return reward


def load_reward_functions(names: list[str], code_path: list[str] | tuple[str, ...] = ()) -> list[Callable]:
    functions = []
    for name in names:
        function = load_callable(name, "reward function", code_path)
        check_reward_signature(function, name)
        functions.append(_checked(function, name))
    return functions


def import_object(path: str) -> Any:
    """The object `module:Name` names (a MethodSpec's TRL config and trainer classes), imported."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
