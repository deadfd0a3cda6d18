"""TRL's trainers, taking the ids the data stage made (rlhf.data.tokenize) as they are.

    adapted(TRL's trainer class, adapter, columns) -> the class the runner builds

Each encoding of the data stage (rlhf.data.tokenize.ENCODINGS, one per MethodSpec.tokenized)
names the columns it makes and the adapter below that keeps its trainer from making them again.

The data stage tokenizes every row exactly as the method's trainer would and keeps the ids in
the prepared dataset. Each trainer is then kept from tokenizing it again, at the one place
where it would, and nothing else of it changes (its collator, loss and metrics are its own):

- DPOTrainer has no skip for tokenized rows in TRL 1.16: its `_prepare_dataset` (tokenize, then
  drop rows whose prompt fills max_length) returns a dataset holding the encoding's columns as
  it is (`skips_prepare_dataset`). The drop is already done: the data stage's length rule drops
  those rows (rlhf.data.build.length_rule) and reports them, under every excess_length rule.
- KTOTrainer likewise, but its `_prepare_dataset` goes on after tokenizing: the KL completions
  (each row's completion shifted by one within each batch of per_device_train_batch_size,
  which the data stage cannot know) and a warning when the desirable and undesirable weights
  do not suit the labels' balance. Both are done here, on the Arrow columns, the same way (the
  parity test holds the KL column to TRL's own): `skips_prepare_dataset_but_kl`.
- RewardTrainer skips the tokenization itself when chosen_ids and rejected_ids are there: no
  subclass (its length filter runs, and finds nothing left to drop).
- ORPOTrainer and CPOTrainer tokenize in their constructor (row by row maps, the last one their
  `tokenize_row`): they are given zero rows to map, and the data stage's rows, which hold
  tokenize_row's columns already, once constructed (`constructed_on_no_rows`).
- The online trainers tokenize prompts as they generate: nothing to skip.

Rows without the columns (a dataset the data stage did not make) go TRL's own way.
"""

from __future__ import annotations

import logging
from typing import Any

from rlhf.trl import written_for

log = logging.getLogger("rlhf")

WRITTEN_FOR = written_for(trl=">=1.16,<1.17")


def holds(dataset: Any, columns: tuple[str, ...]) -> bool:
    """Whether `dataset` is a map-style dataset that holds every one of `columns`."""
    return set(columns) <= set(getattr(dataset, "column_names", None) or ())


def kl_order(rows: int, batch_size: int) -> list[int]:
    """The row whose completion each row takes as its KL completion: the previous row of its
    batch of `batch_size` consecutive rows, the batch's last row for its first (KTOTrainer's
    rotation by one within each batch of a batched map)."""
    order = []
    for start in range(0, rows, batch_size):
        end = min(start + batch_size, rows)
        order += [end - 1, *range(start, end - 1)]
    return order


def balance_warning(labels: list[bool], desirable_weight: float, undesirable_weight: float) -> str | None:
    """KTOTrainer's advice when desirable and undesirable rows are not balanced and neither
    weight is in the range Eq. (8) of the KTO paper recommends (arXiv 2402.01306)."""
    desirable = max(sum(labels), 1)
    undesirable = max(len(labels) - desirable, 1)
    if desirable == undesirable:
        return None
    des_low = round((undesirable * undesirable_weight / desirable) * 1, 2)
    des_high = round((undesirable * undesirable_weight / desirable) * 1.33, 2)
    und_low = round((desirable * desirable_weight / undesirable) / 1.33, 2)
    und_high = round((desirable * desirable_weight / undesirable) / 1, 2)
    if des_low <= desirable_weight <= des_high or und_low <= undesirable_weight <= und_high:
        return None
    return ("You have different amounts of desirable/positive and undesirable/negative examples but the weights on "
            "the desirable and undesirable losses don't seem to be in an ideal range. Based on your data, we "
            f"recommend EITHER desirable_weight in [{des_low}, {des_high}] or undesirable_weight in [{und_low}, "
            f"{und_high}] (but NOT BOTH). See the documentation on how to optimally set these weights.")


def skips_prepare_dataset(base: type, columns: tuple[str, ...]) -> type:
    """DPOTrainer: its `_prepare_dataset` returns a dataset that holds `columns` as it is."""

    class SkipsPrepareDataset(base):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if holds(dataset, columns):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return SkipsPrepareDataset


def skips_prepare_dataset_but_kl(base: type, columns: tuple[str, ...]) -> type:
    """KTOTrainer: its `_prepare_dataset` on a dataset that holds `columns` (prompt_ids,
    completion_ids) only adds what follows its tokenization: the KL completions and the advice
    on the labels' balance."""

    class SkipsPrepareDatasetButKl(base):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if not holds(dataset, columns):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            import pyarrow as pa

            arrow = dataset.with_format("arrow")
            if self.calculate_KL:
                order = pa.array(kl_order(len(dataset), args.per_device_train_batch_size), type=pa.int64())
                dataset = dataset.add_column("KL_completion_ids", arrow["completion_ids"].take(order))
            if dataset_name == "train":
                advice = balance_warning(arrow["label"].to_pylist(), self.desirable_weight, self.undesirable_weight)
                if advice:
                    log.warning("%s", advice)
            return dataset

    return SkipsPrepareDatasetButKl


def constructed_on_no_rows(base: type, columns: tuple[str, ...]) -> type:
    """ORPOTrainer, CPOTrainer: constructed on zero rows of datasets that hold `columns`, then
    given the rows."""

    class ConstructedOnNoRows(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, train_dataset: Any = None, eval_dataset: Any = None, **kwargs: Any):
            tokenized = holds(train_dataset, columns) and (eval_dataset is None or holds(eval_dataset, columns))
            if not tokenized:
                super().__init__(*args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
                return
            super().__init__(*args, train_dataset=train_dataset.select([]),
                             eval_dataset=None if eval_dataset is None else eval_dataset.select([]), **kwargs)
            self.train_dataset, self.eval_dataset = train_dataset, eval_dataset

    return ConstructedOnNoRows


def adapted(base: type, adapter: Any, columns: tuple[str, ...]) -> type:
    """The trainer class the runner builds: TRL's `base`, kept by `adapter` (one of the functions
    above, or None where the trainer skips by itself) from tokenizing again the rows that hold
    `columns` (see the module doc)."""
    if adapter is None:
        return base
    subclass = adapter(base, columns)
    subclass.__name__ = subclass.__qualname__ = f"Pretokenized{base.__name__}"
    return subclass
