"""The data stage's work on a cache miss: every source formatted and tokenized for the trainer
(in chunks on the worker processes, rlhf.data.workers), the length rule, shuffle and split.

    sources -> format_row (the dataset type) -> shape check -> the trainer's token ids
            -> length rule -> shuffle -> split -> the datasets the trainer gets

The ids are the ones the method's TRL trainer would make (rlhf.data.tokenize), so the length
rule measures exactly the sequences the trainer builds, and the trainer trains on these ids
without tokenizing again.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from rlhf.core.errors import ConfigError, DataError
from rlhf.data import workers
from rlhf.data.formats import get_formatter, reader, type_options
from rlhf.data.rows import (SHAPE_WORDS, DataReport, Failure, Formatted, check_shape, format_range,
                            map_with_datasets, read_rows)
from rlhf.data.sources import EVAL, TRAIN, Source, dataset_sources
from rlhf.data.tokenize import Encoding, RowIssue, encoding, id_arrays
from rlhf.methods.base import UNPAIRED, MethodSpec

log = logging.getLogger("rlhf")


@dataclass
class Chunk:
    """What a worker sends back for a chunk of rows: the formatted rows (None when the parent
    holds them already), the raw row each came from, and their ids and lengths."""

    rows: list[dict] | None
    origin: list[int]
    dropped_empty: int
    ids: dict[str, Any]  # id column -> Arrow array
    lengths: list[int]
    prompt_lengths: list[int] | None
    diverged: int


@dataclass
class Encoded:
    """One source formatted and tokenized, before the length rule."""

    rows: list[dict]
    where: list[str]  # where each formatted row came from
    ids: dict[str, list[Any]]  # id column -> its Arrow arrays, one per chunk
    lengths: list[int]
    prompt_lengths: list[int] | None
    diverged: int = 0


def encode_source(source: Source, method: MethodSpec, tokenizer: Any, index: int, report: DataReport,
                  encoder: Encoding, processes: int, what: str, run_config: Any = None,
                  code_path: list[str] | None = None) -> Encoded:
    """Every row of one source formatted and tokenized for the trainer, in chunks on the
    workers; a DataError at the first bad row, as format_rows gives it."""
    config = source.config
    if config.unpair and method.shape != UNPAIRED:
        raise ConfigError(f"dataset {source.label}: {source.key}.unpair=true turns pairs into unpaired rows, but "
                          f"{method.kind} trains on {SHAPE_WORDS[method.shape]}")
    formatter = get_formatter(reader(method, unpair=config.unpair), config.type, tokenizer, cfg=run_config,
                              dataset_idx=index, code_path=code_path, **type_options(config))
    read_error, mapped = None, None
    if formatter.map_kwargs:  # a transform run through datasets.map: its rows come formatted
        mapped = map_with_datasets(source, formatter, report)
        where = [f"dataset {source.label} row {i}" for i in range(1, len(mapped) + 1)]
        raw = mapped
    else:
        where, raw, read_error = read_rows(source)
        report.rows_read += len(raw)

    def work(start: int, end: int) -> Chunk | Failure:
        if mapped is not None:
            formatted = Formatted(mapped[start:end], list(range(start, end)))
        else:
            formatted = format_range(raw, start, end, formatter, config)
            if isinstance(formatted, Failure):
                return formatted
        try:
            encoded = encoder(formatted.rows) if formatted.rows else None
        except RowIssue as issue:
            return Failure(formatted.origin[issue.index], issue.message, formatting=False)
        return Chunk(None if mapped is not None else formatted.rows, formatted.origin, formatted.dropped_empty,
                     id_arrays(encoded.columns) if encoded else {}, encoded.lengths if encoded else [],
                     encoded.prompt_lengths if encoded else [], encoded.diverged if encoded else 0)

    out = Encoded([], [], {}, [], [] if encoder.drops_full_prompts else None)
    for chunk in workers.in_chunks(len(raw), work, processes, what):
        if isinstance(chunk, Failure):
            raise chunk.error(where, raw, source, method)
        report.dropped_empty += chunk.dropped_empty
        out.rows += chunk.rows if chunk.rows is not None else [mapped[i] for i in chunk.origin]
        out.where += [where[i] for i in chunk.origin]
        for name, array in chunk.ids.items():
            out.ids.setdefault(name, []).append(array)
        out.lengths += chunk.lengths
        if out.prompt_lengths is not None:
            out.prompt_lengths += chunk.prompt_lengths or []
        out.diverged += chunk.diverged
    if read_error is not None:
        raise read_error
    check_shape(out.rows, source, formatter, method)
    return out


def length_rule(encoded: Encoded, max_length: int, rule: str, label: str, encoder: Encoding,
                report: DataReport) -> list[int]:
    """The rows kept under dataset.excess_length (their indices), by the lengths of the
    sequences the trainer builds: `drop` drops the rows longer than max_length, `raise` stops
    at them, `truncate` keeps them for the trainer to cut (one that cannot, RewardTrainer,
    drops them itself: dropped here, and said so). Rows whose prompt alone fills max_length
    are dropped whatever the rule, as their trainer drops them (nothing left to learn from)."""
    lengths = encoded.lengths
    over = [i for i, n in enumerate(lengths) if n > max_length]
    full = set()
    if encoder.drops_full_prompts and encoded.prompt_lengths is not None:
        full = {i for i, n in enumerate(encoded.prompt_lengths) if n >= max_length}
    if over and rule == "raise":
        i, longest = over[0], max(lengths[j] for j in over)
        raise DataError(f"{label}: {len(over)} rows are longer than method.max_length={max_length} tokens "
                        f"(the first is {encoded.where[i]}, {lengths[i]} tokens): raise the limit "
                        f"(method.max_length={longest} fits them all), or drop or cut such rows "
                        "(dataset.excess_length=drop or dataset.excess_length=truncate)")
    if rule == "truncate" and encoder.truncates:
        dropped = full
        report.truncated += len(set(over) - full)
    else:
        if rule == "truncate" and over:
            log.warning("%s: %d rows are longer than method.max_length=%d tokens; %s cannot cut them (it drops such "
                        "rows), so they are dropped", label, len(over), max_length, encoder.trainer)
        dropped = full | set(over)
    if full:
        log.warning("%s: %d rows have a prompt of method.max_length=%d tokens or more, which leaves no answer to "
                    "train on: dropped, as %s drops them", label, len(full), max_length, encoder.trainer)
    report.dropped_long += len(dropped)
    return [i for i in range(len(lengths)) if i not in dropped]


def split_sources(run: Any) -> tuple[list[Source], list[Source]]:
    found = dataset_sources(run.dataset)
    # held-out rows and eval data together are refused at validation
    return [s for role, _, s in found if role == TRAIN], [s for role, _, s in found if role == EVAL]


def held_out_count(size: float, n: int) -> int:
    count = int(round(size * n)) if size < 1 else int(size)
    if not 0 < count < n:
        raise ConfigError(f"dataset.val_set_size={size} holds out {count} of {n} training rows: "
                          "it must leave at least one row on each side")
    return count


def to_dataset(rows: Any, label: str) -> Any:
    """The rows as a datasets.Dataset (build's datasets pass through as they are)."""
    import datasets
    import pyarrow as pa

    if isinstance(rows, datasets.Dataset):
        return rows
    try:
        return datasets.Dataset.from_list(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as error:
        raise DataError(f"{label}: the formatted rows do not share one column layout (for example, plain-text "
                        f"prompts mixed with message lists): {error}") from None


def build(run: Any, tokenizer: Any, run_config: Any = None,
          sources: tuple[list[Source], list[Source]] | None = None) -> tuple[Any, Any, DataReport]:
    """Format, tokenize, check, filter, shuffle and split: the datasets the trainer gets (in
    memory, uncached), the eval one None when there is none."""
    report = DataReport()
    train_sources, eval_sources = sources or split_sources(run)
    rule, max_length = run.dataset.excess_length, run.method.max_length
    encoder = encoding(run.spec, tokenizer, max_length)
    processes = workers.processes(run)

    def load(sources: list[Source], role: str) -> tuple[list[dict], dict[str, list[Any]]]:
        rows: list[dict] = []
        ids: dict[str, list[Any]] = {}
        for index, source in enumerate(sources):
            label = f"{role} dataset {source.label}"
            encoded = encode_source(source, run.spec, tokenizer, index, report, encoder, processes, label,
                                    run_config, run.code_path)
            keep = length_rule(encoded, max_length, rule, label, encoder, report)
            if encoded.diverged:
                log.warning("%s: in %d rows the tokenized prompt is not a prefix of the tokenized prompt + answer "
                            "(the chat template renders the prompt alone differently, or tokens merge across the "
                            "boundary): the answer starts where they diverge, as %s has it", label,
                            encoded.diverged, run.spec.trl_trainer)
            every = len(keep) == len(encoded.rows)
            rows += encoded.rows if every else [encoded.rows[i] for i in keep]
            for name, arrays in encoded.ids.items():
                ids.setdefault(name, []).extend(arrays if every else [gather(arrays, keep)])
            report.sources.append(f"{role}: {source.label} ({source.config.type or 'no type'})")
        return rows, ids

    train_rows, train_ids = load(train_sources, "train")
    eval_rows, eval_ids = load(eval_sources, "eval")
    if not train_rows:
        raise DataError(f"no training rows are left from {', '.join(s.label for s in train_sources)} "
                        f"(read {report.rows_read}, dropped {report.dropped_empty} empty and "
                        f"{report.dropped_long} too long)")
    order = list(range(len(train_rows)))
    if run.dataset.shuffle:
        random.Random(run.seed).shuffle(order)
    held: list[int] = []
    if run.dataset.val_set_size > 0:
        count = held_out_count(run.dataset.val_set_size, len(order))
        held, order = order[:count], order[count:]
    train = assemble(train_rows, train_ids, order, "train data")
    if held:
        evaluation = assemble(train_rows, train_ids, held, "eval data")
    else:
        evaluation = assemble(eval_rows, eval_ids, list(range(len(eval_rows))), "eval data") if eval_rows else None
    report.train_rows, report.eval_rows = len(train), len(evaluation) if evaluation is not None else 0
    return train, evaluation, report


def assemble(rows: list[dict], ids: dict[str, list[Any]], order: list[int], label: str) -> Any:
    """The rows in `order` as a dataset: their columns, and the id columns beside them."""
    import uuid

    import pyarrow as pa

    in_place = order == list(range(len(rows)))
    dataset = to_dataset(rows if in_place else [rows[i] for i in order], label)
    for name, chunks in ids.items():
        column = pa.chunked_array(chunks) if in_place else gather(chunks, order)
        # A fingerprint of its own: datasets would hash the whole column to make one (seconds
        # for 100k rows), and this dataset is saved and loaded back before anything reads it.
        dataset = dataset.add_column(name, column, new_fingerprint=uuid.uuid4().hex)
    return dataset


def gather(chunks: list[Any], rows: list[int]) -> Any:
    """Rows `rows` of an id column held in Arrow chunks (one copy of the chunks first: a take
    over one array is much faster than over many)."""
    import pyarrow as pa

    return pa.chunked_array(chunks).combine_chunks().take(pa.array(rows, type=pa.int64()))
