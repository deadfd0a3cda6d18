"""python -m rlhf.preview [--rows N] [--jsonl] [--eval] <same overrides as train>: the first rows
of the training (or eval) data as the trainer receives them, with token counts, without loading a
model (rlhf.launch.preview)."""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.launch.preview import main as command

        command()


if __name__ == "__main__":
    main()
