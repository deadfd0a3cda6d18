"""python -m rlhf.docs [--check]: the README's generated sections, from the code itself
(rlhf.dev.docs)."""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.dev.docs import main as command

        command()


if __name__ == "__main__":
    main()
