"""python -m rlhf.bench [--only SECTION ...] [--out-dir DIR] [--render | --check] (make bench):
measure the platform against plain TRL, write each section's record to benchmarks/<section>.json
and render BENCHMARKS.md from the records (rlhf.dev.bench.cli)."""

from __future__ import annotations

import sys

from rlhf.core.errors import in_the_environment


def main() -> int:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.dev.bench.cli import main as command

        return command()


if __name__ == "__main__":
    sys.exit(main())
