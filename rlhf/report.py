"""python -m rlhf.report <sweep dir> [--metric NAME] [--group COLUMN] [--plan DIFFERENCE]: a
sweep's tables, plots and best-setting sentence, written again, or (--plan) the seeds and prompts
a difference needs (rlhf.judge.report)."""

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
