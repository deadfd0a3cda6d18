"""How run dirs are named: after the time or job number and the job's overrides.

Hydra's `hydra.job.override_dirname` (e.g. `method.beta=0.1,method.loss_type=ipo`; the keys it
leaves out are listed in conf/config.yaml) becomes part of the name:

    outputs/<date>/<time>_<overrides>                  a single run
    multirun/<date>/<time>/<job number>_<overrides>    a sweep's job (the number first: job order)

The name is a function of the overrides alone, so the same command names each job's dir the same
again, and a re-run of a sweep finds its finished jobs. Path values keep their last part, other
characters a file name should not hold become `_`, and the name is bounded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

NAME_LIMIT = 100  # characters of the overrides part, hash included
_PATH_PREFIX = re.compile(r"(?<=[=,\[])[^=,\[\]]*/")  # a path value's directories: /data/x/a.jsonl -> a.jsonl
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]+")  # slashes left, brackets, quotes, spaces, ...
_NUMBERED = re.compile(r"^(\d+)(?:_|$)")
# Deletions of the companion options (rlhf.launch.companions): the launcher adds them to every job of
# a command that leaves their option (a note and config.yaml say so), so they name no difference
# between jobs, and a name says what the user typed.
_COMPANION_DELETION = re.compile(r"^~(evaluate|tuning)(=null)?$")


def overrides_suffix(overrides: str) -> str:
    """`_<overrides>` for a run dir's name ("" without overrides); the `${overrides_suffix:...}`
    resolver of conf/config.yaml. A name changed to be safe, or cut to NAME_LIMIT, ends in a
    short hash of the whole override string, so different overrides never share a dir."""
    overrides = ",".join(o for o in _split_items(overrides) if not _COMPANION_DELETION.match(o))
    if not overrides:
        return ""
    name = _UNSAFE.sub("_", _PATH_PREFIX.sub("", overrides))
    if name != overrides or len(name) > NAME_LIMIT:
        digest = hashlib.sha256(overrides.encode("utf-8")).hexdigest()[:8]
        name = f"{name[:NAME_LIMIT - len(digest) - 1]}-{digest}"
    return f"_{name}"


def _split_items(overrides: str) -> list[str]:
    """The `key=value` items of an override string, commas inside brackets kept in their value."""
    items, depth, start = [], 0, 0
    for at, char in enumerate(overrides):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(overrides[start:at])
            start = at + 1
    return [*items, overrides[start:]] if overrides else []


def job_number(run_dir: Path) -> int | None:
    """A sweep job's number, from its dir name (`3` or `3_<overrides>`); None if it has none."""
    match = _NUMBERED.match(Path(run_dir).name)
    return int(match[1]) if match else None
