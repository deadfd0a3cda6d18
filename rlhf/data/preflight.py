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
from rlhf.data.cache import PIPELINE_VERSION, code_fingerprint
from rlhf.data.formats import get_formatter, needs_tokenizer, reader, type_options
from rlhf.data.rows import DataReport, format_rows
from rlhf.data.sources import dataset_sources

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
    (rlhf.launch.cli.preflight), so a bad row in the last point of a sweep stops the sweep before the
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
        code = code or code_fingerprint(run)
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
