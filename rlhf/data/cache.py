"""The data stage's entry: the trainer's datasets from the cache when the same inputs were
prepared before, else built (rlhf.data.build) and cached.

The result is saved under `<cache_dir>/data/<key>/`, keyed by everything it depends on (the
sources' content, the dataset config, the tokenizer, the length limit, the seed, the trainer
that tokenizes and the data code), and loaded back from there, so every later run and every job
of a sweep with the same inputs skips the work, and the trainer always gets a file-backed
dataset with a stable fingerprint.

In a job of several ranks, rank 0 alone prepares (under the cache's lock, which holds between
the jobs of a sweep on one machine) and publishes the prepared directory in the run dir; the
other ranks wait for that word and load what it names, so no rank on another node reads the
sources (or downloads a hub dataset) or relies on a lock that may not reach across nodes on a
cluster filesystem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhf.cluster import distributed
from rlhf.core.errors import DataError
from rlhf.core.locks import locked
from rlhf.data.build import build, split_sources, to_dataset
from rlhf.data.lint import template_mismatch
from rlhf.data.rows import DataReport
from rlhf.data.sources import Source, dataset_sources
from rlhf.run.files import PREPARED

log = logging.getLogger("rlhf")

# Bump when the pipeline's output for the same inputs changes (the formats' code is hashed too).
PIPELINE_VERSION = 2


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any  # datasets.Dataset | None
    report: DataReport
    cache: str  # "hit" or "miss" (rank 0, or alone); "from rank 0" (the other ranks)
    path: Path


def prepare_data(run: Any, tokenizer: Any, run_config: Any = None, run_dir: Path | None = None) -> PreparedData:
    """The data stage's entry: the trainer's datasets, from the cache when the same inputs were
    prepared before, else built and cached.

    Args:
        run: the validated run (its dataset, method, seed and cache_dir).
        tokenizer: the run's tokenizer, chat template applied.
        run_config: the resolved config a user transform is called with.
        run_dir: the job's run dir; given in a job of several ranks, rank 0 prepares and names
            the result there, and the other ranks wait for it.

    Returns:
        PreparedData: the train dataset, the eval one (None without eval data), the report of
        rows read and dropped, whether the cache had it, and where it is on disk.

    Raises:
        DataError: a row that cannot be formatted or tokenized (file:line and field named), or
            no training rows left.
    """
    started = time.perf_counter()
    rank, world = distributed.this_rank()
    if run_dir is not None and world > 1 and rank != 0:
        return prepared_by_rank0(run, Path(run_dir), started)
    for warning in template_mismatch(run, tokenizer):
        log.warning("%s", warning)
    train_sources, eval_sources = split_sources(run)
    key = cache_key(run, tokenizer, train_sources, eval_sources)
    root = Path(run.cache_dir).expanduser() / "data"
    final = root / key
    with locked(root / f"{key}.lock"):
        cache = "hit" if (final / "report.json").is_file() else "miss"
        if cache == "miss":
            train, evaluation, report = build(run, tokenizer, run_config, (train_sources, eval_sources))
            # Named by host and pid: another node's job may build the same key beside this one.
            staging = root / f".{key}.{socket.gethostname()}.{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            to_dataset(train, "train data").save_to_disk(str(staging / "train"))
            if evaluation:
                to_dataset(evaluation, "eval data").save_to_disk(str(staging / "eval"))
            (staging / "report.json").write_text(json.dumps(asdict(report), indent=2))
            move_into_place(staging, final)
    if run_dir is not None and world > 1:
        distributed.publish(run_dir, PREPARED, {"path": str(final)})
    return load_prepared(final, cache, run, started)


def move_into_place(staging: Path, final: Path) -> None:
    """The built directory becomes the cache entry, unless a job the lock did not reach (on
    another node) completed the same entry first: the same inputs give the same rows."""
    if not (final / "report.json").is_file():
        shutil.rmtree(final, ignore_errors=True)  # an incomplete entry (report.json is written last)
        try:
            os.replace(staging, final)
            return
        except OSError:
            if not (final / "report.json").is_file():
                raise
    shutil.rmtree(staging, ignore_errors=True)


def prepared_by_rank0(run: Any, run_dir: Path, started: float) -> PreparedData:
    """A rank other than 0: the data rank 0 prepared for this launch, once it is complete."""
    word = distributed.wait_for_rank0(run_dir, PREPARED, "prepare the data")
    final = Path(word["path"])
    if not (final / "report.json").is_file():
        raise DataError(f"rank 0 prepared the data in {final}, but this rank does not find it complete there "
                        f"({final / 'report.json'} is missing): cache_dir={run.cache_dir} must be on a filesystem "
                        "every node of the job shares")
    return load_prepared(final, "from rank 0", run, started)


def load_prepared(final: Path, cache: str, run: Any, started: float) -> PreparedData:
    import datasets

    report = DataReport(**json.loads((final / "report.json").read_text()))
    train_ds = datasets.load_from_disk(str(final / "train"))
    eval_ds = datasets.load_from_disk(str(final / "eval")) if (final / "eval").is_dir() else None
    log.info("data cache %s: %s (%d train rows, %d eval rows; %d read, %d dropped empty, %d dropped "
             "longer than %d tokens, %d truncated) in %.2fs", cache, final, report.train_rows,
             report.eval_rows, report.rows_read, report.dropped_empty, report.dropped_long,
             run.method.max_length, report.truncated, time.perf_counter() - started)
    return PreparedData(train=train_ds, eval=eval_ds, report=report, cache=cache, path=final)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items())),
             tokenizer.chat_template or "", repr(tokenizer.special_tokens_map)]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def user_module_file(type_name: Any) -> Path | None:
    """The file of a user transform module (`file.fn`), found as the formats module finds it."""
    import importlib.util

    if not isinstance(type_name, str) or "." not in type_name:
        return None
    module = type_name.rsplit(".", 1)[0]
    local = Path.cwd() / (module.replace(".", "/") + ".py")
    if local.is_file():
        return local
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    return Path(found.origin) if found is not None and found.origin and Path(found.origin).is_file() else None


def code_fingerprint(run: Any) -> str:
    """The code whose output is cached: this package's data code and any user transform module."""
    here = Path(__file__).resolve().parent
    files = sorted(here.rglob("*.py"))
    for _, _, source in dataset_sources(run.dataset):
        module_file = user_module_file(source.config.type)
        if module_file is not None:
            files.append(module_file)
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_key(run: Any, tokenizer: Any, train: list[Source], evaluation: list[Source]) -> str:
    dataset = asdict(run.dataset)
    dataset.pop("num_proc")  # how many processes made the rows does not change them
    parts = {
        "version": PIPELINE_VERSION,
        "code": code_fingerprint(run),
        "kind": run.spec.kind,
        "shape": run.spec.shape,
        "dataset": dataset,
        "train": [s.fingerprint() for s in train],
        "eval": [s.fingerprint() for s in evaluation],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": run.method.max_length,
        "seed": run.seed,
        # The ids are the trainer's own tokenization: its class, and the library versions that
        # tokenize (a new TRL may tokenize differently).
        "tokenized": [run.spec.tokenized, run.spec.trl_trainer,
                      *(metadata.version(name) for name in ("trl", "transformers", "tokenizers"))],
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
