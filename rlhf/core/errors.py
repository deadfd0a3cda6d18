"""Errors written for people.

Every mistake a user can make in a config, a dataset or a piece of user code is raised as an
`RlhfError` whose message names the place (key, file, row, field), the value found and what
would be valid. The entry points print that message alone, without a traceback, and exit
non-zero; anything else is a bug in the platform and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def one_of(candidates: Iterable[str]) -> str:
    return ", ".join(str(c) for c in candidates)
