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
from rlhf.core.errors import DataError, one_of

# File-name words that mark a split in a local dataset directory laid out like a hub repo
# (train.jsonl / test.jsonl, data/train-00000-of-00001.parquet, ...).
SPLIT_WORDS = {"train": ("train", "training"), "test": ("test", "testing", "eval", "evaluation"),
               "validation": ("validation", "valid", "val", "dev")}

EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow",
              ".txt": "text"}
_LOCAL_PREFIXES = ("/", "./", "../", "~")


def _json_problem(error: json.JSONDecodeError) -> str:
    """What json found wrong and where in the line. Some of its messages end in "at" (the
    place of an unterminated string), and take the column straight after."""
    joiner = " column" if error.msg.endswith(" at") else " at column"
    return f"not valid JSON ({error.msg}{joiner} {error.colno})"


def _json_rows(file: Path) -> Iterator[tuple[str, Any]]:
    with open(file, encoding="utf-8") as f:
        head = f.read(64).lstrip()
        f.seek(0)
        if head.startswith("["):  # one JSON array of rows
            try:
                rows = json.load(f)
            except json.JSONDecodeError as error:
                raise DataError(f"{file}:{error.lineno}: {_json_problem(error)}") from None
            for i, row in enumerate(rows, 1):
                yield f"{file} row {i}", row
            return
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # the newline would move the error to "line 2"
            except json.JSONDecodeError as error:
                raise DataError(f"{file}:{lineno}: {_json_problem(error)}") from None
            yield f"{file}:{lineno}", row


def _csv_rows(file: Path) -> Iterator[tuple[str, Any]]:
    """Each data row with its number among the data rows and the line it starts on, so that
    neither reading (does the header count?) is left to guess."""
    with open(file, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return  # an empty file: Source.rows says so
        number = 0
        while True:
            line = reader.line_num + 1
            cells = next(reader, None)
            if cells is None:
                break
            if not cells:  # a blank line
                continue
            number += 1
            where = f"{file} data row {number} (line {line}, after the header)"
            if len(cells) != len(header):
                raise DataError(f"{where}: {len(cells)} cells, but the header has {len(header)} columns "
                                f"({', '.join(header)})")
            yield where, dict(zip(header, cells))
        if number == 0:
            raise DataError(f"{file} is empty (no rows): it has a header line and no data rows")


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
        # The config key whose options this source reads (dataset, dataset.extra[0], ...): hints
        # name the override to type, e.g. dataset.extra[0].drop_empty=true.
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
                            f"name it with {self.key}.ds_type=jsonl (or json, csv, parquet, arrow, text)")
        return EXTENSIONS[file.suffix]

    def hub_dataset(self) -> Any:
        """The hub dataset, loaded once; rlhf.core.hub is asked first whether the hub can be reached,
        so an unreachable hub fails at once (or loads the cached copy) without the retries."""
        if self._hub is None:
            import datasets

            from rlhf.core import hub

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
            files = self.files()
            rows = (item for file in files for item in READERS[self._format_of(file)](file))
        else:
            files = []
            rows = ((f"{self.config.path} row {i}", row) for i, row in enumerate(self.hub_dataset(), 1))
        limit = self.config.num_rows
        count = 0
        for count, (where, row) in enumerate(rows, 1):
            if limit is not None and count > limit:
                return
            if not isinstance(row, dict):
                raise DataError(f"{where}: a row must be an object with named fields, got {type(row).__name__}")
            yield where, row
        if count == 0:
            if len(files) == 1:
                raise DataError(f"{files[0]} is empty (no rows)")
            where = f": its files are {', '.join(str(f) for f in files)}" if files else ""
            raise DataError(f"dataset {self.label} is empty (no rows){where}")

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
    for role, name in ((TRAIN, "extra"), (EVAL, "eval")):
        for i, config in enumerate(getattr(dataset, name)):
            found.append((role, f"dataset.{name}[{i}]", Source(config, key=f"dataset.{name}[{i}]")))
    if dataset.eval_split is not None:  # the primary source's options, another split
        found.append((EVAL, "dataset.eval_split", Source(dataset, split=dataset.eval_split)))
    return found
