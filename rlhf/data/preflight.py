"""The launcher's check of every row before any job starts: each local source whose type needs
no tokenizer is read and formatted by the data stage's own row loop (rlhf.data.rows), in the
launching process and without torch, so a bad row in the last point of a sweep stops the sweep
before the first point trains."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rlhf.config.schema import SourceConfig
from rlhf.data.build import held_out_count
from rlhf.data.cache import PIPELINE_VERSION, code_fingerprint
from rlhf.data.formats import get_formatter, needs_tokenizer, reader, type_options
from rlhf.data.rows import DataReport, format_rows
from rlhf.data.sources import TRAIN, dataset_sources

@dataclass
class RowsChecked:
    """One source checked by check_rows_before_jobs."""

    label: str
    rows: int  # rows read (0 when an earlier command checked the same content)
    seconds: float
    earlier: bool  # checked by an earlier command on the same content (its marker was found)
    formatted: int | None = None  # rows the type made of them (None: not known, an older marker)


def check_rows_before_jobs(run: Any, done: dict[str, RowsChecked]) -> list[RowsChecked]:
    """Format every row of each local source whose type needs no tokenizer (string families,
    user_defined, untyped rows), with format_rows as the data stage does, and raise its DataError
    at the first bad row: same message, file:line and field. Then check that the training rows
    leave rows on both sides of dataset.val_set_size, as the data stage would (check_split).

    The launching process calls this for every job of a command before Hydra starts any
    (rlhf.launch.cli.preflight), so a bad row in the last point of a sweep stops the sweep before the
    first point trains, without torch. `done` holds the sources this command has checked already,
    by identity (source_identity): each distinct source is read once however many jobs use it.
    Hub datasets (a login node should not download them) and types that need the tokenizer
    (chat_template.*, user transforms) are left to the job's data stage. Returns the sources this
    call checked.

    A source that passes leaves a marker under <cache_dir>/data/rows/, keyed by its files'
    content, its config, the row shape and the data code, so a later command on the same data
    (re-running a sweep, another sweep) only hashes the files. The job's data stage formats every
    row on a cache miss whatever the marker says: formatting a row is checking it, and the job
    needs the formatted rows."""
    out: list[RowsChecked] = []
    for _, _, source in dataset_sources(run.dataset):
        identity = source_identity(run, source)
        if identity is None or identity in done:
            continue
        done[identity] = check_source(run, source, identity)
        out.append(done[identity])
    check_split(run, done)
    return out


def source_identity(run: Any, source: Any) -> str | None:
    """What makes a source's rows what they are for this run (its config, split and the method's
    row shape), as text; None for a source the launcher leaves to the job (a hub dataset, a type
    that needs the tokenizer)."""
    config = source.config
    read, options = reader(run.spec, unpair=config.unpair), type_options(config)
    if not source.is_local or needs_tokenizer(read, config.type, **options):
        return None
    identity = {f.name: getattr(config, f.name) for f in fields(SourceConfig)}
    identity.update(split=source.split, shape=read.shape, extra_types=list(read.extra_types))
    return json.dumps(identity, sort_keys=True, default=str)


def check_source(run: Any, source: Any, identity: str) -> RowsChecked:
    """One source's rows formatted (a DataError at the first bad one), unless a marker says the same
    content was checked before; the marker written after."""
    started = time.perf_counter()
    config = source.config
    read, options = reader(run.spec, unpair=config.unpair), type_options(config)
    key_text = json.dumps([PIPELINE_VERSION, code_fingerprint(run), identity, source.fingerprint()])
    key = hashlib.blake2b(key_text.encode(), digest_size=12).hexdigest()
    marker = Path(run.cache_dir).expanduser() / "data" / "rows" / f"{key}.json"
    if marker.is_file():
        formatted = json.loads(marker.read_text()).get("formatted")
        return RowsChecked(source.label, 0, time.perf_counter() - started, earlier=True, formatted=formatted)
    report = DataReport()
    rows = format_rows(source, get_formatter(read, config.type, **options), run.spec, report)
    checked = RowsChecked(source.label, report.rows_read, time.perf_counter() - started, earlier=False,
                          formatted=len(rows))
    try:  # a cache that cannot be written only costs the next command this check again
        marker.parent.mkdir(parents=True, exist_ok=True)
        staging = marker.with_name(f".{key}.{os.getpid()}.tmp")
        staging.write_text(json.dumps({"source": source.label, "type": config.type, "shape": read.shape,
                                       "rows": report.rows_read, "formatted": len(rows)}, default=str))
        os.replace(staging, marker)
    except OSError:
        pass
    return checked


def check_split(run: Any, done: dict[str, RowsChecked]) -> None:
    """dataset.val_set_size leaves training rows on both sides, counted on the formatted rows of
    the run's training sources when the launcher counted every one of them (the job's length rule
    may drop more: the data stage checks again). The same ConfigError the data stage raises."""
    if run.dataset.val_set_size <= 0:
        return
    counts = [done.get(source_identity(run, source) or "") for role, _, source in dataset_sources(run.dataset)
              if role == TRAIN]
    if counts and all(c is not None and c.formatted is not None for c in counts):
        held_out_count(run.dataset.val_set_size, sum(c.formatted for c in counts))
