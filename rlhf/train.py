"""python -m rlhf.train [group=option ...] [key=value ...] [-m for a sweep]

Train one job, or every job of a sweep (-m), locally or as SLURM job arrays. The command line
is rlhf.launch.cli's (every job composed and validated before any starts); Hydra then runs
rlhf.launch.task.train_job once per job.
"""

from __future__ import annotations

from rlhf.core.errors import in_the_environment


def main() -> None:
    """The `python -m rlhf.train` and `rlhf-train` command. The launching side is imported here,
    so that a library missing from this Python is one message (in_the_environment)."""
    with in_the_environment():
        from rlhf.launch.cli import launch
        from rlhf.launch.task import train_job

        launch(train_job)


if __name__ == "__main__":
    main()
