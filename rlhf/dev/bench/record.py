"""A section's record: its figures with where, when and how they were measured.

    benchmarks/<section>.json = {"section", "command", "started", "finished", "seconds",
                                 "commit", "dirty", "machine", "load": {"start", "end"}, "figures"}

One file per section, so that `python -m rlhf.bench --only <section>` replaces its own record
and no other; BENCHMARKS.md is rendered from these files alone (rlhf.dev.bench.document). The
load average is read at the start and the end of the section: a run made on a busy machine
says so next to its figures.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from rlhf.core.versions import installed_versions
from rlhf.run import rundir

RECORDS = "benchmarks"  # the records' directory, under the output directory (the repository's root)
DOCUMENT = "BENCHMARKS.md"
# The bench's own outputs: writing them does not make the measured code differ from the commit.
OUTPUTS = (RECORDS, DOCUMENT)
VERSIONS = ("torch", "transformers", "trl", "datasets", "tokenizers")


def git_state() -> dict[str, Any]:
    """The commit measured and whether the tree differed from it (tracked files only, the bench's
    own outputs left out: a section run after another, before its record is committed, still
    measures the commit)."""
    return rundir.git_state(leaving_out=OUTPUTS)


def machine() -> dict[str, Any]:
    """The machine and software the figures come from."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), **installed_versions(VERSIONS)}


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


class Measuring:
    """The record of one section being measured: opened before its first run, closed with its
    figures after its last."""

    def __init__(self, section: str, command: str, git: dict[str, Any], host: dict[str, Any]):
        self.record: dict[str, Any] = {"section": section, "command": command, **git, "machine": host,
                                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load": {"start": load()}}
        self.clock = time.monotonic()

    def close(self, figures: dict[str, Any]) -> dict[str, Any]:
        self.record.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                           seconds=round(time.monotonic() - self.clock, 1), figures=figures)
        self.record["load"]["end"] = load()
        return self.record


def write(out_dir: Path, record: dict[str, Any]) -> Path:
    """Write a section's record, replacing that section's previous one and nothing else."""
    path = Path(out_dir) / RECORDS / f"{record['section']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every section's record under `out_dir`, by section name (from the file's name)."""
    folder = Path(out_dir) / RECORDS
    if not folder.is_dir():
        return {}
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}
