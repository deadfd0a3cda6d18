"""BENCHMARKS.md, rendered from the sections' records (benchmarks/<section>.json) and nothing else.

Every figure in the document comes from a record the bench wrote; the text around them is the
renderers' (rlhf.dev.bench.suite), fixed. Each section is headed with its own provenance (when,
at which commit, by which command, on which machine, under what load), since sections are
measured by separate commands and can date from different commits. A section without a record
is rendered as not measured. `check` renders the records again and compares: a figure typed
into the document by hand, a record changed without re-rendering, or a record of no known
section fails it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from rlhf.dev.bench import record
from rlhf.dev.bench.suite import RENDERERS, SECTIONS, TITLES

HEADER = [
    "# Benchmarks",
    "",
    "Written by `python -m rlhf.bench` (`make bench`: every section; `--only <section>`: one) from the "
    "sections' records in `benchmarks/<section>.json`, which the bench writes: do not edit by hand. "
    "`python -m rlhf.bench --check` fails when this file differs from what the records render. Each "
    "section says when, at which commit, by which command and on which machine it was measured, and the "
    "1-minute load average at its start and end: a loaded machine slows every run, and a section "
    "measured under load says so.",
]


def provenance(rec: dict[str, Any]) -> str:
    """A section's record in one paragraph: when, what code, which command, which machine, what load."""
    m, commit = rec["machine"], rec["commit"] or "unknown"
    state = {True: ", with uncommitted changes", False: "", None: ", tree state unknown"}[rec["dirty"]]
    versions = ", ".join(f"{name} {m[name]}" for name in record.VERSIONS if m.get(name))
    return (f"Measured {rec['started']} to {rec['finished']} ({rec['seconds']:.0f} s) at commit {commit[:12]}{state}, "
            f"by `{rec['command']}`, on {m['host']}: {m['cores']} cores ({m['usable_cores']} usable, {m['cpu']}), "
            f"{m['memory_gib']:g} GiB, Python {m['python']}, {versions}. 1-minute load average "
            f"{rec['load']['start']:.2f} at the start, {rec['load']['end']:.2f} at the end.")


def render_section(section: str, rec: dict[str, Any] | None) -> list[str]:
    lines = [f"## {TITLES[section]}", ""]
    if rec is None:
        return lines + [f"Not measured: no `{record.RECORDS}/{section}.json`. `python -m rlhf.bench --only {section}` "
                        "measures it."]
    return lines + [provenance(rec), "", *RENDERERS[section](rec["figures"])]


def render(records: dict[str, dict[str, Any]]) -> str:
    """The whole document: the header, then every section in SECTIONS order."""
    lines = list(HEADER)
    for section in SECTIONS:
        lines += ["", *render_section(section, records.get(section))]
    return "\n".join(lines) + "\n"


def write(out_dir: Path) -> Path:
    """Render BENCHMARKS.md under `out_dir` from the records there."""
    path = Path(out_dir) / record.DOCUMENT
    path.write_text(render(record.read(out_dir)), encoding="utf-8")
    return path


def check(out_dir: Path) -> list[str]:
    """What is wrong with `out_dir`'s BENCHMARKS.md against its records: a record of no known
    section, or the lines where the document differs from their rendering (a unified diff). An
    empty list: the document is exactly what the records render."""
    records = record.read(out_dir)
    problems = [f"{record.RECORDS}/{name}.json is the record of no section (sections: {', '.join(SECTIONS)})"
                for name in records if name not in SECTIONS]
    path = Path(out_dir) / record.DOCUMENT
    actual = path.read_text(encoding="utf-8") if path.is_file() else ""
    expected = render({name: rec for name, rec in records.items() if name in SECTIONS})
    if actual != expected:
        diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "rendered from the records",
                                    str(path), lineterm="", n=0)
        problems.append(f"{path} differs from what its records render (`python -m rlhf.bench --render` writes it):")
        problems += list(diff)
    return problems
