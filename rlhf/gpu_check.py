"""python -m rlhf.gpu_check [--out DIR] [--only NAME,...] [--list] (make gpu-check): every GPU
path of the platform, run on a GPU host (rlhf.cluster.gpu_check)."""

from __future__ import annotations

import sys

from rlhf.core.errors import in_the_environment


def main() -> int:
    """The command. Its side is imported here, so that a library missing from this Python is one
    message (in_the_environment), not an import traceback."""
    with in_the_environment():
        from rlhf.cluster.gpu_check import main as command

        return command()


if __name__ == "__main__":
    sys.exit(main())
