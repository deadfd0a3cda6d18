"""python -m rlhf.job.worker <run_dir>: one training rank, started by torchrun (or any launcher
that sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT). It reads the run dir's resolved
config only; Hydra is not involved."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from rlhf.run import rundir
from rlhf.core.errors import RlhfError
from rlhf.job.preemption import Interrupted, Preempted

log = logging.getLogger("rlhf")


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m rlhf.job.worker <run_dir>", file=sys.stderr)
        sys.exit(2)
    run_dir = Path(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    try:
        from rlhf.job.runner import run_until_done

        run_until_done(run_dir)
    except Preempted as stop:  # saved at the same step on every rank: nothing failed
        log.warning("rank %d: %s", rank, stop)
        sys.exit(130 if isinstance(stop, Interrupted) else 1)
    except Exception as error:  # every rank reports; rank 0 records it in the run dir
        if rank == 0:
            rundir.mark_failed(run_dir, error)
        if isinstance(error, RlhfError):
            print(f"error (rank {rank}): {error}", file=sys.stderr)
        else:
            log.exception("rank %d failed", rank)
        sys.exit(1)


if __name__ == "__main__":
    main()
