"""The data side's checks of a run, registered with validation (rlhf.config.registry): each
source's type fits the method, every local source's files exist, and the eval data belongs to
the training data. They read the config and the file system only: no row is read here (the
launcher's row check is rlhf.data.preflight, the rows themselves the data stage's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.assets import ASSETS
from rlhf.config.registry import register_checks
from rlhf.core.errors import RlhfError
from rlhf.data.formats import check_type, reader, type_options
from rlhf.data.sources import dataset_sources
from rlhf.methods.base import UNPAIRED


def check_dataset_types(run: Any) -> list[str]:
    """Each source's type fits the method, before any data is read (rows are checked later)."""
    problems, seen = [], set()
    for _, where, source in dataset_sources(run.dataset):
        config = source.config
        if id(config) in seen:  # the eval split of the primary source: the same type
            continue
        seen.add(id(config))
        if config.unpair and run.spec.shape != UNPAIRED:
            problems.append(f"{where}.unpair=true turns preference pairs into unpaired rows, but {run.method.kind} "
                            "does not train on unpaired rows")
            continue
        try:
            check_type(reader(run.spec, unpair=config.unpair), config.type, code_path=run.code_path,
                       **type_options(config))
        except RlhfError as error:
            text = str(error).removeprefix("invalid config: ")
            problems.append(f"{where}.type: {text}")
    return problems


def check_dataset_files(run: Any) -> list[str]:
    """Every local source's files exist (a sweep point with a missing file fails here, before
    any job starts, not ten seconds into its own run)."""
    problems = []
    for _, where, source in dataset_sources(run.dataset):
        if not source.is_local:
            continue
        try:
            source.files()
        except RlhfError as error:
            problems.append(f"{where}.path: {str(error).split(': ', 1)[-1]}")
    return problems


def check_eval_data(run: Any) -> list[str]:
    """The eval set belongs to the training data: an embedded default's eval set does not
    silently score a user's own dataset, and a held-out fraction is a fraction or a row count."""
    dataset = run.dataset
    problems = []
    size = dataset.val_set_size
    if size >= 1 and size != int(size):
        problems.append(f"dataset.val_set_size={size} is neither a fraction (< 1) nor a whole number of rows")

    def embedded(path: str) -> bool:
        return Path(str(path)).expanduser().resolve().is_relative_to((Path(ASSETS) / "data").resolve())

    embedded_eval = [s.path for s in dataset.eval if embedded(s.path)]
    if embedded_eval and not embedded(dataset.path):
        problems.append(
            f"dataset.path={dataset.path} is your data, but dataset.eval still holds the embedded default's eval "
            f"set ({', '.join(str(p) for p in embedded_eval)}), which would score your run on other data. "
            "Evaluate on part of your data with 'dataset.eval=[]' dataset.val_set_size=0.05, on a file of "
            "yours with 'dataset.eval=[{path: eval.jsonl, type: ...}]', or not at all with 'dataset.eval=[]'")
    elif size > 0 and (dataset.eval or dataset.eval_split):
        problems.append("dataset.val_set_size holds out training rows for eval, but eval data is also given "
                        "(dataset.eval or dataset.eval_split): choose one, e.g. add 'dataset.eval=[]'")
    return problems


register_checks("data", check_dataset_types, check_dataset_files, check_eval_data)
