"""Validate a composed config completely, before anything expensive happens.

`validate()` takes the config Hydra composed (or one read back from a run dir) and returns a
`RunSpec` of typed group objects, or raises `ConfigError` listing every problem at once:
unknown keys (with the closest valid key), wrong types, values out of range, names that are
not among the valid choices, and the method's own rules. It imports neither torch nor TRL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from rlhf.config import registry
from rlhf.config.checks import RUN_CHECKS
from rlhf.config.explain import group_key_hint, shown, value_problem
from rlhf.config.fields import check_constraints
from rlhf.config.schema import (
    DatasetConfig,
    EvaluateConfig,
    GROUP_SCHEMAS,
    NODE_SCHEMAS,
    HardwareConfig,
    ObjectiveConfig,
    LoggerConfig,
    ModelConfig,
    PeftConfig,
    RunConfig,
    SourceConfig,
    VLLMConfig,
)
from rlhf.config.registry import METHODS
from rlhf.core.errors import ConfigError, RlhfError, did_you_mean, did_you_mean_key, one_of


@dataclass
class RunSpec:
    """A validated run: typed group configs plus the method's registered spec.

    `method` is the method's schema instance (an rlhf.methods.base.MethodConfig) and `spec` its
    rlhf.methods.base.MethodSpec, both as the method registered them (rlhf.config.registry)."""

    method: Any
    dataset: DatasetConfig
    model: ModelConfig
    hardware: HardwareConfig
    peft: PeftConfig
    logger: LoggerConfig
    vllm: VLLMConfig
    objective: ObjectiveConfig
    evaluate: EvaluateConfig
    seed: int
    cache_dir: str
    code_path: list[str]
    spec: Any


def _schema_keys(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def explain_omegaconf_error(error: OmegaConfBaseException, group: str, schema: type | None) -> str:
    """One line for a person out of an OmegaConf key or type error."""
    full_key = getattr(error, "full_key", None) or ""
    where = f"{group}.{full_key}" if full_key and not full_key.startswith(group) else (full_key or group)
    if isinstance(error, ConfigKeyError):
        parent, _, key = where.rpartition(".")
        hint = did_you_mean_key(parent, key, _schema_keys(schema)) if schema is not None else ""
        return f"unknown key {where!r}{hint}"
    if isinstance(error, MissingMandatoryValue):
        return f"{where} is required but not set"
    if isinstance(error, ValidationError):
        message = str(error).splitlines()[0]
        key = str(getattr(error, "key", "") or "")
        problem = value_problem(where, getattr(error, "value", None), message, getattr(error, "object_type", None),
                                key)
        return problem or f"{where}: {message}"
    return f"{where}: {str(error).splitlines()[0]}"


def _typed(group: str, node: Any, schema: type, problems: list[str]) -> Any:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        instance = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        problems.append(explain_omegaconf_error(error, group, schema))
        return None
    problems.extend(check_constraints(instance, group))
    return instance


def _sources_typed(dataset: Any, problems: list[str]) -> bool:
    """Check each entry of dataset.extra / dataset.eval on its own, so that a problem names the
    entry (dataset.eval[0].typ) and the closest valid key. False if any entry has a problem."""
    found = len(problems)
    for key in ("extra", "eval"):
        entries = dataset.get(key) if isinstance(dataset, DictConfig) else None
        if not isinstance(entries, ListConfig):
            continue
        for index, entry in enumerate(entries):
            where = f"dataset.{key}[{index}]"
            if not isinstance(entry, DictConfig):
                problems.append(f"{where} is {entry!r}: each entry is a source with a path and a type, "
                                f"e.g. {{path: data.jsonl, type: chatml.intel}}")
                continue
            for name in entry.keys():
                if name not in _schema_keys(SourceConfig):
                    problems.append(f"unknown key '{where}.{name}'{did_you_mean(str(name), _schema_keys(SourceConfig))}")
            if len(problems) == found:
                _typed(where, entry, SourceConfig, problems)
    return len(problems) == found


def _method_schema(node: Any, problems: list[str]) -> type | None:
    kind = node.get("kind") if isinstance(node, (dict, DictConfig)) else None
    if kind not in METHODS:
        problems.append(f"method.kind={kind!r} is not a registered method{did_you_mean(str(kind), METHODS)}; "
                        f"registered: {one_of(METHODS)}")
        return None
    return METHODS[kind].schema


def validate(cfg: DictConfig | dict) -> RunSpec:
    """The run `cfg` describes, typed and checked, or a ConfigError listing every problem.

    Args:
        cfg: a composed config (Hydra's, or rlhf.launch.compose.compose_job's) or one read back
            from a run dir's config.yaml; a `hydra` node is ignored. It is not changed.

    Returns:
        The RunSpec: each group typed by its schema, the method's spec, the seed, cache dir
        and code path.

    Raises:
        ConfigError: unknown keys (with the closest valid one), wrong types, values out of
            range or not among the choices, and what the run checks find, all at once.
        RlhfError: a side whose checks validation needs has not registered them (import
            rlhf.job first, as every entry point does).
    """
    missing = registry.missing_sides()
    if missing:
        raise RlhfError(f"validation needs the checks that {', '.join(missing)} register when imported: import "
                        "rlhf.job (every entry point does) before validating a config")
    # A private copy: resolving must not change the caller's config.
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg)
    _check_root(cfg)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{getattr(error, 'full_key', '') or 'config'}: {str(error).splitlines()[0]}") from None
    run = _typed_run(cfg)
    problems = [p for check in (*RUN_CHECKS, *registry.side_checks(), *((run.spec.check,) if run.spec.check else ()))
                for p in check(run)]
    if problems:
        raise ConfigError(problems)
    return run


def _check_root(cfg: DictConfig) -> None:
    """Every top-level key is known, and every group has an option selected."""
    problems: list[str] = []
    root_keys = set(_schema_keys(RunConfig))
    for key in cfg.keys():
        if key not in root_keys and key != "hydra":
            hint = did_you_mean(str(key), root_keys) or group_key_hint(str(key), cfg, shown(cfg.get(key)))
            problems.append(f"unknown top-level key {key!r}{hint}")
    for group in ("method", *GROUP_SCHEMAS):
        if group not in cfg or OmegaConf.is_missing(cfg, group) or cfg[group] is None:
            problems.append(f"no {group} selected: choose one with {group}=<option>")
    if problems:
        raise ConfigError(problems)


def _typed_run(cfg: DictConfig) -> RunSpec:
    """Each group and node of a resolved config typed by its schema, or every type, key and
    range problem at once."""
    problems: list[str] = []
    typed: dict[str, Any] = {}
    method_schema = _method_schema(cfg.method, problems)
    if method_schema is not None:
        typed["method"] = _typed("method", cfg.method, method_schema, problems)
    for group, schema in GROUP_SCHEMAS.items():
        if group == "dataset" and not _sources_typed(cfg.dataset, problems):
            continue  # the list entries' own problems say more than the group's merge would
        typed[group] = _typed(group, cfg[group], schema, problems)
    for node, schema in NODE_SCHEMAS.items():
        typed[node] = _typed(node, cfg.get(node) or {}, schema, problems)
    seed, cache_dir = cfg.get("seed", 42), cfg.get("cache_dir", ".cache/rlhf")
    code_path = list(cfg.get("code_path") or [])
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"seed={seed!r} must be a whole number >= 0")
    if problems:
        raise ConfigError(problems)
    return RunSpec(seed=seed, cache_dir=cache_dir, code_path=code_path, spec=METHODS[typed["method"].kind], **typed)
