"""Reads a W&B offline run's transaction log (run-<id>.wandb): LevelDB-style records, each a
`wandb_internal_pb2.Record`. wandb 0.31 ships no Python reader of its own."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7  # checksum (4), length (2), type (1); the file also starts with a 7-byte header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos:pos + length], pos + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
        elif length == 0:
            break
    return out


def run_record(path: Path) -> dict:
    """The run record: id, group, name, and the config as {key: value}."""
    from wandb.proto import wandb_internal_pb2

    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {"id": run.run_id, "group": run.run_group, "name": run.display_name,
                    "config": {item.key: json.loads(item.value_json) for item in run.config.update}}
    raise AssertionError(f"no run record in {path}")
