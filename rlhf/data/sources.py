"""Reading a dataset source row by row, wherever it lives, with the place of every row.

A source is a hub dataset (`path` an id, with `name`, `split`, `revision`) or local files
(`path` a file or a directory, `data_files` one path, a list or a directory relative to it;
`ds_type` json/jsonl/csv/parquet/arrow, else taken from the extension). `Source.rows()`
yields `(where, row)` pairs, where `where` is what an error names: `file.jsonl:17` for JSON
lines, `file.csv row 17`, `<hub id> row 17`.

JSON lines are parsed here, line by line, so a corrupt line is reported as file:line, and a
column that holds mixed types (a KTO label written as true in one row and "yes" in another)
reaches the row checks instead of failing inside Arrow's type inference.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.config.schema import SourceConfig
from rlhf.errors import DataError, one_of

# File-name words that mark a split in a local dataset directory laid out like a hub repo
# (train.jsonl / test.jsonl, data/train-00000-of-00001.parquet, ...).
SPLIT_WORDS = {"train": ("train", "training"), "test": ("test", "testing", "eval", "evaluation"),
               "validation": ("validation", "valid", "val", "dev")}

EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow",
              ".txt": "text"}
_LOCAL_PREFIXES = ("/", "./", "../", "~")


def _json_rows(file: Path) -> Iterator[tuple[str, Any]]:
    with open(file, encoding="utf-8") as f:
        head = f.read(64).lstrip()
        f.seek(0)
        if head.startswith("["):  # one JSON array of rows
            try:
                rows = json.load(f)
            except json.JSONDecodeError as error:
                raise DataError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None
            for i, row in enumerate(rows, 1):
                yield f"{file} row {i}", row
            return
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # the newline would move the error to "line 2"
            except json.JSONDecodeError as error:
                raise DataError(f"{file}:{lineno}: not valid JSON ({error.msg} at column {error.colno})") from None
            yield f"{file}:{lineno}", row


def _csv_rows(file: Path) -> Iterator[tuple[str, Any]]:
    with open(file, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for i, row in enumerate(reader, 1):
            if None in row or None in row.values():  # more or fewer cells than the header names
                cells = len(row) - 1 + len(row[None]) if None in row else sum(v is not None for v in row.values())
                raise DataError(f"{file} row {i} (line {reader.line_num}): {cells} cells, but the header has "
                                f"{len(reader.fieldnames or [])} columns ({', '.join(reader.fieldnames or [])})")
            yield f"{file} row {i}", dict(row)


def _table_rows(file: Path, kind: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file) if kind == "parquet" else pa.ipc.open_stream(file).read_all()
    except Exception as error:  # pyarrow raises many types for a bad file
        raise DataError(f"{file}: cannot read it as {kind} ({error})") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield f"{file} row {i}", row


def _text_rows(file: Path) -> Iterator[tuple[str, Any]]:
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            yield f"{file}:{lineno}", {"text": line.rstrip("\n")}


READERS = {
    "json": _json_rows,
    "csv": _csv_rows,
    "text": _text_rows,
    "parquet": lambda file: _table_rows(file, "parquet"),
    "arrow": lambda file: _table_rows(file, "arrow"),
}


class Source:
    """One configured dataset source, opened lazily (a hub dataset is loaded once). `key` is
    the config key that configures it (`dataset`, `dataset.eval[0]`), which a message names."""

    def __init__(self, config: SourceConfig, split: str | None = None, key: str = "dataset"):
        self.config = config
        self.split = split or config.split
        self.key = key
        self._hub: Any = None

    @property
    def label(self) -> str:
        data_files = self.config.data_files
        return self.config.path if not data_files else f"{self.config.path} ({data_files})"

    @property
    def is_local(self) -> bool:
        path = Path(self.config.path).expanduser()
        return (path.exists() or self.config.ds_type is not None or path.suffix in EXTENSIONS
                or str(self.config.path).startswith(_LOCAL_PREFIXES))

    def _split_files(self, files: list[Path], directory: Path) -> list[Path]:
        """In a directory whose files are named by split, the files of this source's split."""
        def words(path: Path) -> set[str]:
            parts = path.relative_to(directory).with_suffix("").parts
            return {w.lower() for part in parts for w in re.split(r"[-._ ]", part) if w}

        marked = {f: {name for name, aliases in SPLIT_WORDS.items() if words(f) & set(aliases)} for f in files}
        if not any(marked.values()):
            if self.split != "train":
                raise DataError(f"dataset {self.label}: no files for split {self.split!r} (no file names a split; "
                                "every file is the train split)")
            return files
        chosen = [f for f in files if self.split in marked[f]] if self.split in SPLIT_WORDS else \
            [f for f in files if self.split.lower() in words(f)]
        if not chosen:
            found = sorted({name for names in marked.values() for name in names})
            raise DataError(f"dataset {self.label}: no files for split {self.split!r}; the directory has the "
                            f"split(s) {', '.join(found)}")
        return chosen

    def files(self) -> list[Path]:
        """The files of a local source, in a stable order; a clear error if there are none."""
        base = Path(self.config.path).expanduser()
        data_files = self.config.data_files
        if data_files is None:
            targets = [base]
        else:
            names = [data_files] if isinstance(data_files, str) else list(data_files)
            targets = [base / name if base.is_dir() else Path(name).expanduser() for name in names]
        files: list[Path] = []
        for target in targets:
            if target.is_dir():
                found = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in EXTENSIONS
                               and not any(part.startswith(".") for part in p.relative_to(target).parts))
                if not found:
                    raise DataError(f"dataset {self.label}: the directory {target} holds no data files "
                                    f"({one_of(sorted(EXTENSIONS))})")
                files += self._split_files(found, target) if data_files is None else found
            elif target.is_file():
                files.append(target)
            else:
                raise DataError(f"dataset {self.label}: no such file or directory: {target}")
        return files

    def _format_of(self, file: Path) -> str:
        if self.config.ds_type is not None:
            return "json" if self.config.ds_type == "jsonl" else self.config.ds_type
        if file.suffix not in EXTENSIONS:
            raise DataError(f"dataset {self.label}: cannot tell the format of {file} from its extension; "
                            "set ds_type to one of json, jsonl, csv, parquet, arrow")
        return EXTENSIONS[file.suffix]

    def hub_dataset(self) -> Any:
        """The hub dataset, loaded once; rlhf.hub is asked first whether the hub can be reached,
        so an unreachable hub fails at once (or loads the cached copy) without the retries."""
        if self._hub is None:
            import datasets

            from rlhf import hub

            cfg = self.config
            state = hub.datasets_state()
            try:
                self._hub = datasets.load_dataset(cfg.path, cfg.name, split=self.split, revision=cfg.revision,
                                                  data_files=cfg.data_files)
            except OSError as error:  # not on the hub, not reachable, not cached (ConnectionError included)
                fix = f"Use local data: {self.key}.path=<a local file or directory>"
                raise DataError(hub.failure("dataset", cfg.path, fix, error, state, revision=cfg.revision,
                                            revision_key=f"{self.key}.revision")) from None
            except ValueError as error:  # an unknown split or config name
                raise DataError(f"dataset {cfg.path!r}: {str(error).splitlines()[0]}") from None
        return self._hub

    def rows(self) -> Iterator[tuple[str, dict]]:
        """Every row with where it came from; stops after num_rows rows."""
        if self.is_local:
            rows = (item for file in self.files() for item in READERS[self._format_of(file)](file))
        else:
            rows = ((f"{self.config.path} row {i}", row) for i, row in enumerate(self.hub_dataset(), 1))
        limit = self.config.num_rows
        for count, (where, row) in enumerate(rows):
            if limit is not None and count >= limit:
                return
            if not isinstance(row, dict):
                raise DataError(f"{where}: a row must be an object with named fields, got {type(row).__name__}")
            yield where, row

    def fingerprint(self) -> str:
        """What the content is: the local files' bytes, or the hub dataset's identity."""
        digest = hashlib.blake2b(digest_size=16)
        cfg = self.config
        digest.update(json.dumps([self.split, cfg.num_rows]).encode())
        if self.is_local:
            for file in self.files():
                digest.update(str(file.resolve()).encode())
                with open(file, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        else:
            identity = [cfg.path, cfg.name, cfg.revision, cfg.data_files,
                        getattr(self.hub_dataset(), "_fingerprint", None)]
            digest.update(json.dumps(identity, default=str).encode())
        return digest.hexdigest()


TRAIN, EVAL = "train", "eval"


def dataset_sources(dataset: Any) -> list[tuple[str, str, Source]]:
    """Every source of a `dataset` config, in order: (train or eval, the key that configures
    it, the source). The primary source, `dataset.extra`, `dataset.eval`, then the primary's
    `dataset.eval_split`. The one walk of a dataset's sources (checks, data stage, preview)."""
    found = [(TRAIN, "dataset", Source(dataset))]
    found += [(TRAIN, f"dataset.extra[{i}]", Source(s, key=f"dataset.extra[{i}]")) for i, s in enumerate(dataset.extra)]
    found += [(EVAL, f"dataset.eval[{i}]", Source(s, key=f"dataset.eval[{i}]")) for i, s in enumerate(dataset.eval)]
    if dataset.eval_split is not None:  # the primary source (its path is dataset.path), another split
        found.append((EVAL, "dataset.eval_split", Source(dataset, split=dataset.eval_split)))
    return found
