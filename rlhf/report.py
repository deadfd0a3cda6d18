"""python -m rlhf.report <sweep dir> [--metric NAME]: a sweep's tables, plot and best-setting
sentence, written again (rlhf.judge.report)."""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.judge.report import main as command

        command()


if __name__ == "__main__":
    main()
