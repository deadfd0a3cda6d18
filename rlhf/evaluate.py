"""python -m rlhf.evaluate <run dir | model dir | hub id> [key=value ...] [--out DIR]: the generation
eval stage on any checkpoint, the untrained base model included (rlhf.launch.evaluate; the stage
itself is rlhf.judge)."""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.launch.evaluate import main as command

        command()


if __name__ == "__main__":
    main()
