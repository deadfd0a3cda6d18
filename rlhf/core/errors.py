"""Errors written for people.

Every mistake a user can make in a config, a dataset or a piece of user code is raised as an
`RlhfError` whose message names the place (key, file, row, field), the value found and what
would be valid. The entry points print that message alone, without a traceback, and exit
non-zero; anything else is a bug in the platform and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
from collections.abc import Iterable, Iterator


class RlhfError(Exception):
    """A user-facing error: the message is the whole story."""


class ConfigError(RlhfError):
    """One or more problems in a composed config, all reported at once."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = f"invalid config: {self.problems[0]}"
        else:
            text = "invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class DataError(RlhfError):
    """A dataset, file or row that cannot become training data."""


class UserCodeError(RlhfError):
    """User code named in the config (a reward function, a transform) that cannot be used."""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to `word`, if any is near enough to be what the user meant."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' or ''."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""


def did_you_mean_key(parent: str, key: str, keys: Iterable[str]) -> str:
    """' (did you mean parent.X?)' or '': the closest of a node's `keys` to `key`, as the full
    dotted key to type (`method.beta`, not `beta`)."""
    match = closest(key, keys)
    return f" (did you mean {f'{parent}.{match}' if parent else match!r}?)" if match else ""


def one_of(candidates: Iterable[str]) -> str:
    return ", ".join(str(c) for c in candidates)


@contextlib.contextmanager
def in_the_environment() -> Iterator[None]:
    """The body of an entry point (`python -m rlhf.<name>`): a library missing from the Python that
    runs it, as outside the project's environment, is one line naming the library and the way
    into the environment, and exit 2, instead of an import traceback."""
    try:
        yield
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if not missing or missing == "rlhf":
            raise
        print(f"error: {missing} is not installed in the Python that runs this ({sys.executable}): run it in the "
              "project's environment (source .venv/bin/activate first, or make train ARGS='...', which also sets "
              f"the environment up); inside it, install what is missing (pip install {missing})", file=sys.stderr)
        sys.exit(2)
