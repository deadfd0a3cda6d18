"""python -m rlhf.bench: measure sections, record each, render BENCHMARKS.md from the records.

    python -m rlhf.bench                               every section at full size (make bench)
    python -m rlhf.bench --only data_large --rows N    one section (or several), smaller
    python -m rlhf.bench --out-dir /tmp/b ...          records and document there, not in the repository
    python -m rlhf.bench --render                      re-render BENCHMARKS.md from the records, measure nothing
    python -m rlhf.bench --check                       fail when BENCHMARKS.md is not what the records render

Each section measured writes its record (rlhf.dev.bench.record), replacing that section's
earlier one and no other, and the document is rendered again after each, so that a section
that fails leaves the document consistent with the records already written.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlhf.config.tree import REPO
from rlhf.dev.bench import document, record
from rlhf.dev.bench.suite import DEFAULTS, RUNNERS, SECTIONS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlhf.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help="sections to measure (default: all): " + " ".join(SECTIONS))
    p.add_argument("--steps", type=int, help="steps of the sections that train a fixed number "
                   "(methods, lora_memory; sweep and generation: a cap on the shipped defaults)")
    p.add_argument("--repeats", type=int, help="repeats of methods, config and generation")
    p.add_argument("--rows", type=int, help="rows of data and data_large")
    p.add_argument("--out-dir", type=Path, default=REPO,
                   help=f"where {record.RECORDS}/<section>.json and {record.DOCUMENT} are written (default: the "
                   "repository)")
    p.add_argument("--render", action="store_true", help=f"only render {record.DOCUMENT} from the records")
    p.add_argument("--check", action="store_true", help=f"only check {record.DOCUMENT} against the records")
    return p


def sizes(section: str, args: argparse.Namespace) -> dict[str, Any]:
    """The section's sizes: its defaults, with the ones it takes from the command line replaced."""
    given = {"steps": args.steps, "repeats": args.repeats, "rows": args.rows}
    return {key: given[key] if given.get(key) is not None else value for key, value in DEFAULTS[section].items()}


def measure(sections: list[str], args: argparse.Namespace, command: str) -> None:
    """Measure each section in SECTIONS order, write its record and re-render the document."""
    git, host = record.git_state(), record.machine()
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    for section in [s for s in SECTIONS if s in sections]:
        measuring = record.Measuring(section, command, git, host)
        place = work / section
        place.mkdir()
        figures = RUNNERS[section](place, **sizes(section, args))
        path = record.write(args.out_dir, measuring.close(figures))
        print(f"{section}: {measuring.record['seconds']:.0f} s, wrote {path}", file=sys.stderr)
        document.write(args.out_dir)
        shutil.rmtree(place, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {Path(args.out_dir) / record.DOCUMENT}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.check:
        problems = document.check(args.out_dir)
        print("\n".join(problems) if problems else f"{record.DOCUMENT} is what the records render", file=sys.stderr)
        return 1 if problems else 0
    if args.render:
        print(f"wrote {document.write(args.out_dir)}", file=sys.stderr)
        return 0
    measure(args.only or list(SECTIONS), args, shlex.join(["python", "-m", "rlhf.bench", *argv]))
    return 0
