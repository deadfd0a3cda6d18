"""From the `dataset` config to the datasets the trainer receives, checked row by row.

    sources -> format_row (the dataset type) -> shape check -> the trainer's token ids
            -> length rule -> shuffle -> split -> cached on disk, keyed by everything the
            result depends on

Formatting and tokenizing run in batches, in worker processes over the job's CPUs
(rlhf.data.workers: dataset.num_proc, else hardware.cpus_per_process), with progress lines
in the log. The ids are the ones the method's TRL trainer would make (rlhf.data.tokenize), so
the length rule measures exactly the sequences the trainer builds, and the trainer trains on
these ids without tokenizing again (rlhf.pretokenized).

Every training and eval source is read row by row with its own type (rlhf.data.formats); a
row that cannot be formatted stops the run before any model loads, with the dataset, the file
and line (or row number) and the field named. The result is saved under
`<cache_dir>/data/<key>/` and loaded back from there, so every later run and every job of a
sweep with the same inputs skips the work, and the trainer always gets a file-backed dataset
with a stable fingerprint.

In a job of several ranks, rank 0 alone prepares (under the cache's lock, which holds between
the jobs of a sweep on one machine) and publishes the prepared directory in the run dir; the
other ranks wait for that word and load what it names, so no rank on another node reads the
sources (or downloads a hub dataset) or relies on a lock that may not reach across nodes on a
cluster filesystem.

Before any job starts, the launching process runs the same row loop over every local source
whose type needs no tokenizer (check_rows_before_jobs), so a bad row stops a whole sweep at
once, without torch. Once the tokenizer is loaded, the data stage warns when a string family's
markers are not the model's own (template_mismatch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhf import distributed
from rlhf.config.schema import SourceConfig
from rlhf.data import workers
from rlhf.data.formats import (SHAPE_COLUMNS, RowError, get_formatter, needs_tokenizer, reader, row_readers,
                               suggest_types, type_options)
from rlhf.data.sources import EVAL, TRAIN, Source, dataset_sources
from rlhf.data.tokenize import Encoding, RowIssue, encoding, id_arrays
from rlhf.errors import ConfigError, DataError
from rlhf.locks import locked
from rlhf.methods.base import PAIRS, PROMPTS, UNPAIRED, MethodSpec

log = logging.getLogger("rlhf")

# Bump when the pipeline's output for the same inputs changes (the formats' code is hashed too).
PIPELINE_VERSION = 2
ROW_WORDS = {PAIRS: "a preference pair", UNPAIRED: "an unpaired row with a label", PROMPTS: "a prompt"}
# The run dir's file in which rank 0 names the prepared data for the other ranks.
PREPARED = ".prepared_data.json"
SHAPE_WORDS = {PAIRS: "preference pairs (prompt, chosen, rejected)",
               UNPAIRED: "unpaired rows with a label (prompt, completion, label)",
               PROMPTS: "prompts (prompt)"}


@dataclass
class DataReport:
    rows_read: int = 0
    dropped_empty: int = 0
    dropped_long: int = 0
    truncated: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    sources: list[str] = field(default_factory=list)


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any  # datasets.Dataset | None
    report: DataReport
    cache: str  # "hit" or "miss" (rank 0, or alone); "from rank 0" (the other ranks)
    path: Path


# ---------------------------------------------------------------------------- formatting


def _unpair(row: dict) -> list[dict]:
    """A preference pair as two KTO rows: the chosen answer desirable, the rejected not."""
    return [{"prompt": row["prompt"], "completion": row["chosen"], "label": True},
            {"prompt": row["prompt"], "completion": row["rejected"], "label": False}]


def _map_with_datasets(source: Source, formatter: Any, report: DataReport) -> list[dict]:
    """A transform that asked for datasets.map arguments (batched, ...) gets datasets.map."""
    import datasets

    raw = [row for _, row in source.rows()]
    report.rows_read += len(raw)
    table = datasets.Dataset.from_list(raw)
    remove = formatter.remove_columns
    remove = table.column_names if "__all__" in remove else [c for c in remove if c in table.column_names]
    try:
        mapped = table.map(formatter.map_function, remove_columns=remove, **formatter.map_kwargs)
    except Exception as error:  # the user's transform or its map arguments
        raise DataError(f"dataset {source.label}: the transform {formatter.type_name} failed under datasets.map"
                        f"({', '.join(f'{k}={v!r}' for k, v in formatter.map_kwargs.items())}): "
                        f"{type(error).__name__}: {error}") from None
    if "prompt" not in mapped.column_names:
        raise DataError(f"dataset {source.label}: the transform {formatter.type_name} gave no 'prompt' column "
                        f"(columns: {', '.join(mapped.column_names)})")
    return mapped.to_list()


def _row_hint(error: RowError, raw: Any, source: Source, method: MethodSpec, unpair: bool) -> str:
    """What to do about a row that failed, as the override to type for this source."""
    if error.empty:
        return f" (to drop such rows instead, add {source.key}.drop_empty=true)"
    if not isinstance(raw, dict) or error.field is None or error.field in raw:
        return ""  # a field that is there but wrong: the message says what it needs
    if method.shape == UNPAIRED and not unpair and {"chosen", "rejected"} <= set(raw):
        types = suggest_types(reader(method, unpair=True), raw)
        with_type = (f" (with a pair type that reads it: {' or '.join(types)})"
                     if types and source.config.type not in types else "")
        return (f". This row is a preference pair: add {source.key}.unpair=true{with_type} to train {method.kind} on "
                "its chosen (desirable) and rejected (undesirable) answers")
    readers = row_readers(raw)
    if not readers or method.shape in {shape for shape, _ in readers}:
        return ""  # the message already lists the method's types whose fields the row has
    shape, kinds = readers[0]
    types = suggest_types(kinds[0], raw)
    with_type = f" and a type that reads it: {' or '.join(types)}" if types else ""
    return (f". This row is {ROW_WORDS[shape]} (what {' and '.join(kinds)} train{'s' if len(kinds) == 1 else ''} "
            f"on), not {ROW_WORDS[method.shape]}: train it with "
            + " or ".join(f"method={kind}" for kind in kinds) + with_type)


def format_source(source: Source, method: MethodSpec, tokenizer: Any, index: int,
                  report: DataReport, run_config: Any = None, code_path: list[str] | None = None) -> list[dict]:
    """Every row of one source as the trainer will see it; a DataError at the first bad row."""
    config = source.config
    unpair, shape = config.unpair, method.shape
    if unpair and shape != UNPAIRED:
        raise ConfigError(f"dataset {source.label}: {source.key}.unpair=true turns pairs into unpaired rows, but "
                          f"{method.kind} trains on {SHAPE_WORDS[shape]}")
    formatter = get_formatter(reader(method, unpair=unpair), config.type, tokenizer, cfg=run_config,
                              dataset_idx=index, code_path=code_path, **type_options(config))
    if formatter.map_kwargs:
        return _map_with_datasets(source, formatter, report)
    return format_rows(source, formatter, method, report)


def format_rows(source: Source, formatter: Any, method: MethodSpec, report: DataReport) -> list[dict]:
    """Every row of `source` through a resolved type, in this process: the check the launching
    process makes before any job starts (check_rows_before_jobs), and the preview. The data
    stage runs the same row loop (format_range) in chunks on its workers (encode_source)."""
    where, raw, read_error = read_rows(source)
    report.rows_read += len(raw)
    formatted = format_range(raw, 0, len(raw), formatter, source.config)
    if isinstance(formatted, Failure):
        raise formatted.error(where, raw, source, method)
    report.dropped_empty += formatted.dropped_empty
    if read_error is not None:
        raise read_error
    check_shape(formatted.rows, source, formatter, method)
    return formatted.rows


def read_rows(source: Source) -> tuple[list[str], list[Any], DataError | None]:
    """Every row of a source with where it came from (file:line, or the hub dataset's row);
    a row that cannot be read ends the list, and its error is returned after the rows before
    it, to be raised only if none of them fails first (the first bad row is the one reported)."""
    where: list[str] = []
    raw: list[Any] = []
    try:
        for place, row in source.rows():
            where.append(place)
            raw.append(row)
    except DataError as error:
        return where, raw, error
    return where, raw, None


@dataclass
class Formatted:
    rows: list[dict]
    origin: list[int]  # the raw row each formatted row came from (an unpaired pair gives two)
    dropped_empty: int = 0


@dataclass
class Failure:
    """The first row of a chunk that failed: its index among the raw rows, and why."""

    index: int
    reason: str
    field: str | None = None
    empty: bool = False
    formatting: bool = True  # False: the row formatted, but cannot be tokenized as the trainer would

    def error(self, where: list[str], raw: list[Any], source: Source, method: MethodSpec) -> DataError:
        """The DataError naming the row's file and line (or hub row) and the field."""
        if not self.formatting:
            return DataError(f"{where[self.index]}: {self.reason}")
        error = RowError(self.reason, field=self.field, empty=self.empty)
        hint = _row_hint(error, raw[self.index], source, method, source.config.unpair)
        return DataError(f"{where[self.index]}: {self.reason}{hint}")


def format_range(raw: list[Any], start: int, end: int, formatter: Any, config: Any) -> Formatted | Failure:
    """Rows start..end-1 through the type; the first that fails (unless an empty answer
    dropped under drop_empty) as a Failure, which travels back from a worker as plain data."""
    out = Formatted([], [])
    for index in range(start, end):
        try:
            row = formatter(raw[index])
        except RowError as error:
            if error.empty and config.drop_empty:
                out.dropped_empty += 1
                continue
            return Failure(index, error.reason, error.field, error.empty)
        for one in (_unpair(row) if config.unpair else [row]):
            out.rows.append(one)
            out.origin.append(index)
    return out


def check_shape(rows: list[dict], source: Source, formatter: Any, method: MethodSpec) -> None:
    missing = [c for c in SHAPE_COLUMNS[method.shape] if rows and c not in rows[0]]
    if missing:
        raise DataError(f"dataset {source.label}: its type {formatter.type_name!r} gives rows with "
                        f"{', '.join(sorted(rows[0]))}, but this method trains on {SHAPE_WORDS[method.shape]}")


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
        mapped = _map_with_datasets(source, formatter, report)
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


# ---------------------------------------------------------------------------- lengths


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


# ---------------------------------------------------------------------------- the whole stage


def _sources(run: Any) -> tuple[list[Source], list[Source]]:
    found = dataset_sources(run.dataset)
    # held-out rows and eval data together are refused at validation
    return [s for role, _, s in found if role == TRAIN], [s for role, _, s in found if role == EVAL]


def _held_out_count(size: float, n: int) -> int:
    count = int(round(size * n)) if size < 1 else int(size)
    if not 0 < count < n:
        raise ConfigError(f"dataset.val_set_size={size} holds out {count} of {n} training rows: "
                          "it must leave at least one row on each side")
    return count


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items())),
             tokenizer.chat_template or "", repr(tokenizer.special_tokens_map)]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def _user_module_file(type_name: Any) -> Path | None:
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


def _code_fingerprint(run: Any) -> str:
    """The code whose output is cached: this package's data code and any user transform module."""
    here = Path(__file__).resolve().parent
    files = sorted(here.rglob("*.py"))
    for _, _, source in dataset_sources(run.dataset):
        module_file = _user_module_file(source.config.type)
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
        "code": _code_fingerprint(run),
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


def _to_dataset(rows: Any, label: str) -> Any:
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
    import pyarrow as pa

    report = DataReport()
    train_sources, eval_sources = sources or _sources(run)
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
        count = _held_out_count(run.dataset.val_set_size, len(order))
        held, order = order[:count], order[count:]
    train = _assemble(train_rows, train_ids, order, "train data")
    if held:
        evaluation = _assemble(train_rows, train_ids, held, "eval data")
    else:
        evaluation = _assemble(eval_rows, eval_ids, list(range(len(eval_rows))), "eval data") if eval_rows else None
    report.train_rows, report.eval_rows = len(train), len(evaluation) if evaluation is not None else 0
    return train, evaluation, report


def _assemble(rows: list[dict], ids: dict[str, list[Any]], order: list[int], label: str) -> Any:
    """The rows in `order` as a dataset: their columns, and the id columns beside them."""
    import uuid

    import pyarrow as pa

    in_place = order == list(range(len(rows)))
    dataset = _to_dataset(rows if in_place else [rows[i] for i in order], label)
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


def prepare_data(run: Any, tokenizer: Any, run_config: Any = None, run_dir: Path | None = None) -> PreparedData:
    """The trainer's datasets, from the cache when the same inputs were prepared before. With
    `run_dir` (the job's) in a job of several ranks, rank 0 prepares and the others wait for it."""
    started = time.perf_counter()
    rank, world = distributed.this_rank()
    if run_dir is not None and world > 1 and rank != 0:
        return _prepared_by_rank0(run, Path(run_dir), started)
    for warning in template_mismatch(run, tokenizer):
        log.warning("%s", warning)
    train_sources, eval_sources = _sources(run)
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
            _to_dataset(train, "train data").save_to_disk(str(staging / "train"))
            if evaluation:
                _to_dataset(evaluation, "eval data").save_to_disk(str(staging / "eval"))
            (staging / "report.json").write_text(json.dumps(asdict(report), indent=2))
            _move_into_place(staging, final)
    if run_dir is not None and world > 1:
        distributed.publish(run_dir, PREPARED, {"path": str(final)})
    return _load(final, cache, run, started)


def _move_into_place(staging: Path, final: Path) -> None:
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


def _prepared_by_rank0(run: Any, run_dir: Path, started: float) -> PreparedData:
    """A rank other than 0: the data rank 0 prepared for this launch, once it is complete."""
    word = distributed.wait_for_rank0(run_dir, PREPARED, "prepare the data")
    final = Path(word["path"])
    if not (final / "report.json").is_file():
        raise DataError(f"rank 0 prepared the data in {final}, but this rank does not find it complete there "
                        f"({final / 'report.json'} is missing): cache_dir={run.cache_dir} must be on a filesystem "
                        "every node of the job shares")
    return _load(final, "from rank 0", run, started)


def _load(final: Path, cache: str, run: Any, started: float) -> PreparedData:
    import datasets

    report = DataReport(**json.loads((final / "report.json").read_text()))
    train_ds = datasets.load_from_disk(str(final / "train"))
    eval_ds = datasets.load_from_disk(str(final / "eval")) if (final / "eval").is_dir() else None
    log.info("data cache %s: %s (%d train rows, %d eval rows; %d read, %d dropped empty, %d dropped "
             "longer than %d tokens, %d truncated) in %.2fs", cache, final, report.train_rows,
             report.eval_rows, report.rows_read, report.dropped_empty, report.dropped_long,
             run.method.max_length, report.truncated, time.perf_counter() - started)
    return PreparedData(train=train_ds, eval=eval_ds, report=report, cache=cache, path=final)


# ---------------------------------------------------------------------------- template and tokenizer


def _family_presets(family: Any) -> list[str]:
    from rlhf.config.compose import conf_dir

    names = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))
    return [n for n in names if n.startswith(family.model_presets)] if family.model_presets else []


def template_mismatch(run: Any, tokenizer: Any) -> list[str]:
    """A warning per string family (chatml.*, llama3.*, zephyr.*) whose markers the model's
    tokenizer does not use: not written by its chat template nor its EOS/BOS (or, for a tokenizer
    without a chat template, not in its vocabulary). Such a run trains, but the model learns a
    conversation format it will not be prompted with, often with markers split into ordinary
    pieces. A warning, not an error: a user may mean to teach a base model a new format.

    Checked here, in the job right after the tokenizer loads, not in the launching process:
    that covers hub tokenizers (most real models) as well as local ones, with the tokenizer and
    chat template the run really uses (model.tokenizer, model.chat_template applied), at no cost
    (the job loads it anyway). Reading a local tokenizer.json in the launcher would cover only
    local directories and repeat how transformers finds a tokenizer's template and tokens; a
    warning has no need to stop anything before the first job."""
    from rlhf.data.chat_templates import NAMED
    from rlhf.data.formats import type_family
    from rlhf.data.formats.families import FAMILIES

    uses: dict[str, dict[str, tuple[str, str]]] = {}  # family -> {where: (mapping, row shape)}
    for _, where, source in dataset_sources(run.dataset):
        config = source.config
        read = reader(run.spec, unpair=config.unpair)
        family = type_family(read, config.type, **type_options(config))
        if family in FAMILIES:
            mapping = str(config.type).partition(".")[2] or "default"
            uses.setdefault(family, {})[f"{where}.type={config.type}"] = (mapping, read.shape)
    if not uses:
        return []
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(str(t) for t in template.values())
    own = {tokenizer.eos_token, tokenizer.bos_token} - {None}
    vocab = tokenizer.get_vocab()

    def missing(family: Any) -> list[str]:
        """The family's markers this tokenizer does not use."""
        if template:
            return [t for t in family.special_tokens if t not in template and t not in own]
        return [t for t in family.special_tokens if t not in vocab]

    model = run.model.tokenizer or run.model.name_or_path
    fitting = [f for f in FAMILIES.values() if not missing(f)]
    warnings = []
    for name, places in uses.items():
        family = FAMILIES[name]
        foreign = missing(family)
        if not foreign:
            continue
        unknown = [t for t in foreign if t not in vocab]
        if template:
            what = (f"{', '.join(foreign)} are missing from the chat template of the tokenizer of {model} "
                    f"(its EOS is {tokenizer.eos_token})"
                    + (f", and {', '.join(unknown)} from its vocabulary too (split into ordinary pieces)"
                       if unknown else "")
                    + ": the model learns turns in a format it will not be prompted with")
        else:
            what = (f"{', '.join(foreign)} are missing from the vocabulary of the tokenizer of {model} (it has no "
                    "chat template): each is split into ordinary pieces")
        fixes = []
        presets = _family_presets(family)
        if presets:
            fixes.append(f"model={presets[0]}" + (f" (or {', '.join(presets[1:])})" if presets[1:] else "")
                         + ", whose tokenizer writes them")
        if not unknown and name in NAMED:
            fixes.append(f"model.chat_template={name} (this tokenizer has these tokens)")
        same = sorted({f"{other.name}.{mapping}" for other in fitting for mapping, shape in places.values()
                       if mapping in other.mappings.get(shape, ())})
        if same:
            fixes.append(f"keep this model with a type in its format ({', '.join(same)})")
        warnings.append(f"{', '.join(places)} does not match the model's chat format: {what}. Use "
                        + ("; or ".join(fixes) if fixes else "a model whose chat template writes them"))
    return warnings


# ---------------------------------------------------------------------------- before any job starts


@dataclass
class RowsChecked:
    """One source checked by check_rows_before_jobs."""

    label: str
    rows: int
    seconds: float
    earlier: bool  # checked by an earlier command on the same content (its marker was found)


def check_rows_before_jobs(run: Any, done: set[str]) -> list[RowsChecked]:
    """Format every row of each local source whose type needs no tokenizer (string families,
    user_defined, untyped rows), with format_rows as the data stage does, and raise its DataError
    at the first bad row: same message, file:line and field.

    The launching process calls this for every job of a command before Hydra starts any
    (rlhf.cli.preflight), so a bad row in the last point of a sweep stops the sweep before the
    first point trains, without torch. `done` holds the sources this command has checked already:
    each distinct source (its config, split and the method's row shape) is read once however
    many jobs use it. Hub datasets (a login node should not download them) and types that need
    the tokenizer (chat_template.*, user transforms) are left to the job's data stage.

    A source that passes leaves a marker under <cache_dir>/data/rows/, keyed by its files'
    content, its config, the row shape and the data code, so a later command on the same data
    (re-running a sweep, another sweep) only hashes the files. The job's data stage formats every
    row on a cache miss whatever the marker says: formatting a row is checking it, and the job
    needs the formatted rows."""
    out: list[RowsChecked] = []
    code = None
    for _, _, source in dataset_sources(run.dataset):
        config = source.config
        read, options = reader(run.spec, unpair=config.unpair), type_options(config)
        if not source.is_local or needs_tokenizer(read, config.type, **options):
            continue
        identity = {f.name: getattr(config, f.name) for f in fields(SourceConfig)}
        identity.update(split=source.split, shape=read.shape, extra_types=list(read.extra_types))
        identity_text = json.dumps(identity, sort_keys=True, default=str)
        if identity_text in done:
            continue
        done.add(identity_text)
        started = time.perf_counter()
        code = code or _code_fingerprint(run)
        key_text = json.dumps([PIPELINE_VERSION, code, identity_text, source.fingerprint()])
        key = hashlib.blake2b(key_text.encode(), digest_size=12).hexdigest()
        marker = Path(run.cache_dir).expanduser() / "data" / "rows" / f"{key}.json"
        if marker.is_file():
            out.append(RowsChecked(source.label, 0, time.perf_counter() - started, earlier=True))
            continue
        report = DataReport()
        format_rows(source, get_formatter(read, config.type, **options), run.spec, report)
        out.append(RowsChecked(source.label, report.rows_read, time.perf_counter() - started, earlier=False))
        try:  # a cache that cannot be written only costs the next command this check again
            marker.parent.mkdir(parents=True, exist_ok=True)
            staging = marker.with_name(f".{key}.{os.getpid()}.tmp")
            staging.write_text(json.dumps({"source": source.label, "type": config.type, "shape": read.shape,
                                           "rows": report.rows_read}, default=str))
            os.replace(staging, marker)
        except OSError:
            pass
    return out
