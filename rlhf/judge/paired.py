"""A sweep's generation figures prompt by prompt: every job of a sweep answers the same prompts
with the same decoding seed (evaluate.seed), so two settings can be compared on each prompt
(a paired design) and a setting's figure has two levels, seeds and prompts (rlhf.judge.stats).

    analysis = analyse(rows, keys, "win_rate")   # rows: rlhf.judge.report.collect's
    analysis["reason"]        # None, or why the jobs cannot be paired (then today's rule)
    analysis["figures"]       # per setting: mean and its two-level interval
    analysis["pairs"]         # every pair of settings: difference, interval, p, Holm p, separable

The per-prompt figures come from each job's completions.jsonl (rlhf.judge.stage): the win
outcome, each scorer's score, the length in tokens, the KL, whether the completion finished,
and whether it is empty (a figure of its own: the share of empty completions).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.judge import stats
from rlhf.run import rundir
from rlhf.run.files import COMPLETIONS

SHARE = (0.0, 1.0)
# A figure's possible range: intervals never leave it. Scorers are the user's: unbounded.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "win_rate": SHARE, "finished": SHARE, "empty": SHARE, "length_controlled_win_rate": SHARE,
    "length": (0.0, None), "kl": (None, None)}
EMPTY = "empty"

_CACHE: dict[tuple[str, int], dict[str, Any]] = {}


def figure_range(name: str) -> tuple[float | None, float | None]:
    """The possible range of a generation figure (None: unbounded on that side)."""
    return RANGES.get(name, (None, None))


def read(path: Path) -> dict[str, Any]:
    """One job's completions.jsonl as per-prompt figures: {"prompts": {index: the prompt as
    JSON}, "figures": {name: {index: the mean over the prompt's samples}}} (a sample without a
    value, nan or missing, left out)."""
    key = (str(path), path.stat().st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    prompts: dict[int, str] = {}
    columns: dict[int, dict[str, Any]] = {}
    sums: dict[str, dict[int, list[float]]] = {}

    def add(name: str, index: int, value: Any) -> None:
        if isinstance(value, (int, float)) and math.isfinite(float(value)):  # a bool counts 0 or 1
            sums.setdefault(name, {}).setdefault(index, []).append(float(value))

    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        index = int(row["prompt_index"])
        prompts[index] = json.dumps(row.get("prompt"), sort_keys=True)
        columns[index] = row.get("columns") or {}
        add("win_rate", index, row.get("win"))
        for name, value in (row.get("scores") or {}).items():
            add(name, index, value)
        add("length", index, row.get("tokens"))
        add("kl", index, row.get("kl"))
        add("finished", index, row.get("finished"))
        add(EMPTY, index, not str(row.get("completion", "")).strip())
    figures = {name: {i: math.fsum(v) / len(v) for i, v in by.items()} for name, by in sums.items()}
    _CACHE[key] = {"prompts": prompts, "figures": figures, "columns": columns}
    return _CACHE[key]


def _decoding(row: dict) -> str:
    block = row.get("generation") or {}
    return json.dumps({"decoding": block.get("decoding"), "prompts": (block.get("prompts") or {}).get("count")},
                      sort_keys=True)


def shared(rows: list[dict]) -> tuple[dict[str, dict], str | None]:
    """The finished jobs' per-prompt figures (by job), and why they cannot be compared prompt by
    prompt (None when they can): a job without completions.jsonl, different prompts, or
    different decoding settings or seed."""
    finished = [r for r in rows if r["status"] == rundir.FINISHED and r.get("path") is not None]
    if not finished:
        return {}, "no finished job"
    missing = [r["job"] for r in finished if not (Path(r["path"]) / COMPLETIONS).is_file()]
    if missing:
        return {}, f"job{'s' if len(missing) > 1 else ''} {', '.join(missing)} left no {COMPLETIONS}"
    data = {r["job"]: read(Path(r["path"]) / COMPLETIONS) for r in finished}
    if len({json.dumps(d["prompts"], sort_keys=True) for d in data.values()}) > 1:
        return {}, "the jobs did not answer the same prompts"
    if len({_decoding(r) for r in finished}) > 1:
        return {}, "the jobs did not decode with the same settings and seed (evaluate.seed, temperature, ...)"
    return data, None


def analyse(rows: list[dict], keys: list[str], name: str, level: float = stats.LEVEL,
            prompts: set[int] | None = None) -> dict[str, Any]:
    """One generation figure of a sweep, per setting and per pair of settings, prompt by prompt.

    Args:
        rows: the jobs (rlhf.judge.report.collect's rows: overrides, status, path, generation).
        keys: the setting keys (the swept keys but seed).
        name: the figure (win_rate, a scorer's name, length, kl, finished, empty).
        level: the level of intervals and of the family of pairs.
        prompts: only these prompt indices (a group of prompts); None: every prompt.

    Returns:
        {"reason": why it cannot be done, or None; "settings": the settings' key values, in
        the order of `figures`; "figures": per setting its mean with the two-level interval
        (stats.interval) and seeds; "pairs": stats.pairwise over the settings (Holm over all
        pairs); "prompts": the number of prompts every job scored; "components"}.
    """
    data, reason = shared(rows)
    if reason:
        return {"reason": reason}
    groups: dict[tuple, list[str]] = {}
    for row in rows:
        if row["job"] in data and name in data[row["job"]]["figures"]:
            groups.setdefault(tuple(row["overrides"].get(k, "") for k in keys), []).append(row["job"])
    if not groups:
        return {"reason": f"no job has per-prompt values of {name}"}
    jobs = [j for members in groups.values() for j in members]
    common = sorted(set.intersection(*(set(data[j]["figures"][name]) for j in jobs)))
    if prompts is not None:
        common = [i for i in common if i in prompts]
    if len(common) < 2:
        return {"reason": f"fewer than 2 prompts with a value of {name} in every job"}
    if max(len(m) for m in groups.values()) < 2:
        return {"reason": "one seed per setting: the seed variance cannot be estimated"}
    settings = list(groups)
    tables = [np.array([[data[j]["figures"][name][i] for i in common] for j in groups[s]]) for s in settings]
    bounds = figure_range(name)
    parts = stats.components(tables)
    figures = [{**stats.interval(t, parts, level, bounds), "seeds": t.shape[0]} for t in tables]
    return {"reason": None, "settings": settings, "figures": figures, "tables": tables,
            "pairs": stats.pairwise(tables, level, bounds), "prompts": len(common), "components": parts,
            "bounds": bounds}


def groups(rows: list[dict], column: str) -> dict[str, set[int]]:
    """The prompts of each value of a grouping column of the prompt rows ({} when the jobs'
    completions do not carry it, or cannot be paired)."""
    data, reason = shared(rows)
    if reason or not data:
        return {}
    first = next(iter(data.values()))
    out: dict[str, set[int]] = {}
    for index, columns in first["columns"].items():
        if column in columns:
            out.setdefault(str(columns[column]), set()).add(index)
    return out if len(out) > 1 else {}
