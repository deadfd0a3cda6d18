"""TRL's trainers, taking the ids the data stage made (rlhf.data.tokenize) as they are.

    trainer_class(TRL's trainer class, MethodSpec.tokenized) -> the class the runner builds

The data stage tokenizes every row exactly as the method's trainer would and keeps the ids in
the prepared dataset. Each trainer is then kept from tokenizing it again, at the one place
where it would, and nothing else of it changes (its collator, loss and metrics are its own):

- DPOTrainer has no skip for tokenized rows in TRL 1.16: its `_prepare_dataset` (tokenize, then
  drop rows whose prompt fills max_length) returns a dataset holding prompt_ids, chosen_ids and
  rejected_ids as it is. The drop is already done: the data stage's length rule drops those
  rows (rlhf.data.pipeline.length_rule) and reports them, under every excess_length rule.
- KTOTrainer likewise, but its `_prepare_dataset` goes on after tokenizing: the KL completions
  (each row's completion shifted by one within each batch of per_device_train_batch_size,
  which the data stage cannot know) and a warning when the desirable and undesirable weights
  do not suit the labels' balance. Both are done here, on the Arrow columns, the same way (the
  parity test holds the KL column to TRL's own).
- RewardTrainer skips the tokenization itself when chosen_ids and rejected_ids are there: no
  subclass (its length filter runs, and finds nothing left to drop).
- ORPOTrainer and CPOTrainer tokenize in their constructor (row by row maps, the last one their
  `tokenize_row`): they are given zero rows to map, and the data stage's rows, which hold
  tokenize_row's columns already, once constructed.
- The online trainers tokenize prompts as they generate: nothing to skip.

Rows without the columns (a dataset the data stage did not make) go TRL's own way.
"""

from __future__ import annotations

import logging
from typing import Any

from rlhf.methods.base import PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS, TOKENIZE_ROW_IDS

log = logging.getLogger("rlhf")

PROMPT_ANSWER_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
PROMPT_COMPLETION_COLUMNS = ("prompt_ids", "completion_ids")
TOKENIZE_ROW_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "chosen_labels", "rejected_input_ids",
                        "rejected_labels")


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


def takes_prompt_answer_ids(base: type) -> type:
    class PromptAnswerIds(base):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if holds(dataset, PROMPT_ANSWER_COLUMNS):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PromptAnswerIds


def takes_prompt_completion_ids(base: type) -> type:
    class PromptCompletionIds(base):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if not holds(dataset, PROMPT_COMPLETION_COLUMNS):
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            import pyarrow as pa

            columns = dataset.with_format("arrow")
            if self.calculate_KL:
                order = pa.array(kl_order(len(dataset), args.per_device_train_batch_size), type=pa.int64())
                dataset = dataset.add_column("KL_completion_ids", columns["completion_ids"].take(order))
            if dataset_name == "train":
                advice = balance_warning(columns["label"].to_pylist(), self.desirable_weight, self.undesirable_weight)
                if advice:
                    log.warning("%s", advice)
            return dataset

    return PromptCompletionIds


def takes_tokenize_row_ids(base: type) -> type:
    class TokenizeRowIds(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, train_dataset: Any = None, eval_dataset: Any = None, **kwargs: Any):
            tokenized = holds(train_dataset, TOKENIZE_ROW_COLUMNS) and (
                eval_dataset is None or holds(eval_dataset, TOKENIZE_ROW_COLUMNS))
            if not tokenized:
                super().__init__(*args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
                return
            super().__init__(*args, train_dataset=train_dataset.select([]),
                             eval_dataset=None if eval_dataset is None else eval_dataset.select([]), **kwargs)
            self.train_dataset, self.eval_dataset = train_dataset, eval_dataset

    return TokenizeRowIds


SUBCLASSES = {
    PROMPT_ANSWER_IDS: takes_prompt_answer_ids,
    PROMPT_COMPLETION_IDS: takes_prompt_completion_ids,
    TOKENIZE_ROW_IDS: takes_tokenize_row_ids,
}


def trainer_class(base: type, tokenized: str | None) -> type:
    """The trainer class the runner builds for a method: TRL's, kept from tokenizing again the
    rows the data stage tokenized (see the module doc)."""
    make = SUBCLASSES.get(tokenized) if tokenized is not None else None
    if make is None:
        return base
    subclass = make(base)
    subclass.__name__ = subclass.__qualname__ = f"Pretokenized{base.__name__}"
    return subclass
