"""Reference log-probs computed once per model and data, shared by every job that trains on them.

With `method.precompute_ref_log_probs`, TRL's DPOTrainer computes the reference log-probs of
the whole dataset before training. It caches them beside the data, but under a fingerprint
that includes its whole config (beta, output dir, ...), so the jobs of a sweep over beta or
the loss type never share them. Here TRL still computes them, once; we keep the two columns
it produces under a key of what they depend on only: the prepared rows (our data cache key),
the reference weights (TRL's own hash of the module), the split, and every setting that
changes the values (`VALUE_SETTINGS`: the length limit, LD-DPO's ld_alpha, the autocast
precision, padding, the attention kernel) plus the TRL and torch versions. Jobs that build
their trainer one at a time (a lock beside the data) find them. In a job of several ranks,
rank 0 alone decides whether the store has them and tells the others, so a write by a
concurrent job between two ranks' looks cannot send one rank past TRL's collectives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhf.core.errors import RlhfError
from rlhf.core.locks import locked
from rlhf.trl import written_for

log = logging.getLogger("rlhf")

WRITTEN_FOR = written_for(trl=">=1.16,<1.17")

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
# The DPOConfig fields that change the reference log-probs TRL computes (compute_ref_log_probs
# and its collator); beta, the loss type and the like do not.
VALUE_SETTINGS = ("max_length", "truncation_mode", "ld_alpha", "bf16", "fp16", "padding_free", "pad_to_multiple_of")


def store_key(name: str, model_hash: str, rows: int, args: Any, attention: str) -> str:
    """The store's key for the log-probs of split `name` (see the module doc)."""
    settings = [f"{field}={getattr(args, field, None)}" for field in VALUE_SETTINGS]
    parts = [name, str(model_hash), str(rows), *settings, f"attention={attention}",
             metadata.version("trl"), metadata.version("torch")]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def rank_zero_sees(path: Path, broadcast: Any = None) -> bool:
    """Whether the store holds `path`, as rank 0 sees it, on every rank."""
    if broadcast is None:
        from accelerate.utils import broadcast_object_list as broadcast
    found = [(path / "dataset_info.json").is_file()]
    broadcast(found, from_process=0)
    return bool(found[0])


def build_trainer(trainer_class: type, kwargs: dict[str, Any], data_dir: Path,
                  world_size: int) -> tuple[Any, dict[str, str]]:
    """The trainer, its reference precompute going through the shared store. Jobs sharing the
    prepared data build their trainers one at a time, so the log-probs are computed once.
    Returns the trainer and, per split, whether they were computed or reused."""
    shared_class = sharing_trainer(trainer_class, data_dir)
    if world_size > 1:
        # The ranks of one job construct together (collectives inside); concurrent jobs may
        # then both compute, and the store's atomic rename keeps it whole.
        trainer = shared_class(**kwargs)
    else:
        with locked(Path(data_dir) / "reference.lock"):
            trainer = shared_class(**kwargs)
    return trainer, dict(trainer.shared_reference)


def sharing_trainer(trainer_class: type, data_dir: Path) -> type:
    """A subclass of TRL's trainer whose reference precompute reads and fills the shared store."""
    store = Path(data_dir) / "reference"

    class SharedReference(trainer_class):  # type: ignore[misc, valid-type]
        shared_reference: dict[str, str] = {}

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            import datasets

            attention = getattr(self.model.config, "_attn_implementation", None)
            path = store / store_key(name, self._precompute_model_hash, len(dataset), self.args, str(attention))
            if rank_zero_sees(path):
                cached = datasets.load_from_disk(str(path))
                if len(cached) != len(dataset):  # the key holds the row count: a damaged store
                    raise RlhfError(f"{path} holds {len(cached)} rows of reference log-probs for {len(dataset)} "
                                       "rows; delete it and run again")
                self.shared_reference[name] = "reused"
                log.info("reference log-probs for %s reused from %s", name, path)
                return datasets.concatenate_datasets([dataset, cached], axis=1)
            result = super()._precompute_ref_logps(dataset, name, batch_size)
            self.shared_reference[name] = "computed"
            if self.accelerator.is_main_process:
                staging = store / f".{path.name}.{os.getpid()}"
                shutil.rmtree(staging, ignore_errors=True)
                result.select_columns(list(COLUMNS)).flatten_indices().save_to_disk(str(staging))
                shutil.rmtree(path, ignore_errors=True)
                os.replace(staging, path)
                log.info("reference log-probs for %s computed and kept in %s", name, path)
            return result

    SharedReference.__name__ = f"Shared{trainer_class.__name__}"
    return SharedReference
