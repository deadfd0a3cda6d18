"""python -m rlhf.bench [--only SECTION ...] (make bench): measure the platform against plain TRL
and write BENCHMARKS.md (rlhf.dev.bench.suite)."""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.dev.bench.suite import main as command

        command()


if __name__ == "__main__":
    main()
