"""The data stage's row work on every core the job has, in order, with progress in the log.

    for result in in_chunks(total, work, processes, "train dataset x.jsonl"): ...

`work(start, end)` formats and tokenizes rows start..end-1. With several processes it runs in
worker processes started by fork when the work starts, so they see everything the data stage
set up before (the raw rows, the formatter, the tokenizer, the encoding) without pickling any
of it; only each chunk's result travels back. Results come back in chunk order, so the first
bad row reported is the first one in the data, whichever worker met it, and a consumer that
stops early (a bad row) stops the workers. With one process, or rows too few to be worth
starting workers, the chunks run here, in the same order, with the same results.

Processes, not the tokenizer's own threads: a chunk is Python work too (formatting the rows,
the chat template, cutting the prompt off, building Arrow arrays), which threads cannot share;
the Rust tokenizer runs single-threaded in each worker (TOKENIZERS_PARALLELISM=false, set for
every training process), so the processes do not fight over the cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from rlhf.core.text import duration

log = logging.getLogger("rlhf")

# Below this many rows one process does all the work: starting workers costs more than it saves.
PARALLEL_MIN_ROWS = 4096
# Rows per chunk: enough for the tokenizer's batches, few enough to spread the work evenly and
# report progress often.
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 256, 4096
# Seconds between progress lines of a long stage.
PROGRESS_EVERY_S = 10.0


def processes(run: Any) -> int:
    """Worker processes for the data stage: dataset.num_proc if set, else the job's CPUs
    (hardware.cpus_per_process for each training process of the node: the stage runs once,
    before they start or while they wait), at most the cores this process may run on."""
    if run.dataset.num_proc is not None:
        return run.dataset.num_proc
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(run.hardware.cpus_per_process * run.hardware.processes_per_node, cores))


def chunk_rows(total: int, processes: int) -> int:
    """About eight chunks per process, within MIN_CHUNK_ROWS..MAX_CHUNK_ROWS."""
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, -(-total // (8 * max(1, processes)))))


def rows_line(what: str, done: int, total: int, rows_per_second: float | None) -> str:
    """The data stage's progress: `train dataset x.jsonl: 40000/100000 rows (40%) | 5200
    rows/s | ETA 0:00:11`."""
    parts = [f"{what}: {done}/{total} rows ({100 * done // total if total else 100}%)"]
    if rows_per_second:
        parts.append(f"{rows_per_second:.0f} rows/s")
        if done < total:
            parts.append(f"ETA {duration((total - done) / rows_per_second)}")
    return " | ".join(parts)

class RowsProgress:
    """Progress lines of one source's rows: every PROGRESS_EVERY_S, and a last one at the end."""

    def __init__(self, what: str, total: int, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.clock = what, total, clock
        self.started = self.last = clock()
        self.done = 0

    def rate(self, now: float) -> float | None:
        return self.done / (now - self.started) if now > self.started and self.done else None

    def add(self, rows: int) -> str | None:
        """Count `rows` more; the line to log, when one is due."""
        self.done += rows
        now = self.clock()
        if now - self.last < PROGRESS_EVERY_S or self.done >= self.total:
            return None
        self.last = now
        return rows_line(self.what, self.done, self.total, self.rate(now))

    def end(self, workers: int) -> str:
        now = self.clock()
        rate = self.rate(now)
        pace = f"{rate:.0f} rows/s, " if rate else ""
        return (f"{self.what}: {self.total} rows formatted and tokenized in {now - self.started:.1f} s "
                f"({pace}{workers} process{'es' if workers > 1 else ''})")


# The work of the running stage, as the forked workers see it (set before they start).
_WORK: Callable[[int, int], Any] | None = None


def _run(bounds: tuple[int, int]) -> Any:
    assert _WORK is not None
    return _WORK(*bounds)


def _worker_start() -> None:
    """A worker drops the signal handlers it inherited (the job's preemption handler records
    SIGTERM and SLURM's USR signals for the trainer): a signal ends a worker, and Ctrl-C goes
    to the data stage, which stops the workers."""
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def in_chunks(total: int, work: Callable[[int, int], Any], processes: int, what: str,
              min_rows: int = PARALLEL_MIN_ROWS) -> Iterator[Any]:
    """work(start, end) over 0..total in chunks, results in order (see the module doc)."""
    global _WORK
    size = chunk_rows(total, processes)
    bounds = [(start, min(start + size, total)) for start in range(0, total, size)]
    progress = RowsProgress(what, total)
    parallel = processes > 1 and total >= min_rows and "fork" in multiprocessing.get_all_start_methods()
    workers = min(processes, len(bounds)) if parallel else 1
    if workers <= 1:
        results: Iterator[Any] = (work(*b) for b in bounds)
        pool = None
    else:
        _WORK = work
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start)
        results = pool.imap(_run, bounds)
    finished = False
    try:
        for (start, end), result in zip(bounds, results):
            line = progress.add(end - start)
            if line:
                log.info("%s", line)
            yield result
        finished = True
        log.info("%s", progress.end(workers))
    finally:
        _WORK = None
        if pool is not None:
            if finished:
                pool.close()  # every chunk done: the workers exit on their own
            else:
                pool.terminate()  # a bad row or an interrupt: stop the others' chunks now
            pool.join()
