"""Composing one job's config as Hydra will, and explaining why a composition failed.

`compose_job(overrides)` is what the command line, `--help`, the preview, the vLLM server
command, `python -m rlhf.evaluate` and the tests use to get a job's config without running
Hydra's app; its failures become one `ConfigError` in people's words (an unknown option with the
valid ones, an unknown key with the closest one, a YAML syntax error with its file:line:column).
`resolved_config` turns a composed config into the plain data a run dir's config.yaml holds.
No torch, no TRL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rlhf.config.explain import group_key_hint, value_problem
from rlhf.config.tree import CONFIG_NAME, conf_dir
from rlhf.core.errors import ConfigError, did_you_mean, did_you_mean_key


def compose_job(overrides: list[str], config_dir: Path | None = None,
                config_name: str = CONFIG_NAME) -> Any:
    """One job's config composed as Hydra will compose it, without Hydra's own node.

    Args:
        overrides: the job's overrides, as on the command line (group=option, key=value).
        config_dir: a config tree of the user's (--config-path); None: the shipped one.
        config_name: the root config's name in that tree.

    Returns:
        The composed DictConfig, interpolations unresolved.

    Raises:
        ConfigError: the composition failed, explained in one message.
    """
    return compose_with_choices(overrides, config_dir, config_name)[0]


def compose_with_choices(overrides: list[str], config_dir: Path | None = None,
                         config_name: str = CONFIG_NAME) -> tuple[Any, dict[str, Any]]:
    """compose_job's config, and the option Hydra chose in each config group (group -> option
    name, None for a group left out), which says which companion options apply
    (rlhf.launch.companions)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from rlhf.launch.store import register_configs

    register_configs()
    add_code_dir(config_dir or conf_dir())
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        except Exception as error:  # Hydra raises several types; each becomes one message
            raise ConfigError(explain_compose_error(error, overrides, config_dir, config_name)) from None
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def explain_compose_error(error: Exception, overrides: list[str], config_dir: Path | None,
                          config_name: str) -> str:
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else None
    yaml_problem = _yaml_problem(error, config_dir)
    if yaml_problem:
        return yaml_problem
    if isinstance(error, MissingConfigException):
        return _explain_missing_option(str(error))
    in_list = _list_override(error, cause)
    if in_list is not None:  # a key inside an entry of a list given on the command line
        override_key, fields = in_list
        key = str(getattr(cause, "key", "") or getattr(cause, "full_key", ""))
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            hint = did_you_mean(key, fields)
            return (f"unknown key {key!r} in an entry of {override_key}{hint}"
                    + ("" if hint else f"; an entry's keys: {', '.join(fields)}"))
        problem = value_problem(key, getattr(cause, "value", None), str(cause), getattr(cause, "object_type", None))
        return (f"in an entry of {override_key}: {problem}" if problem
                else f"{override_key} entry, key {key!r}: {str(cause).splitlines()[0]}")
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        full_key = getattr(cause, "full_key", "") or ""
        parent, _, key = full_key.rpartition(".")
        others = [o for o in overrides if _override_key(o) != full_key]
        valid = _keys_at(parent, others, config_dir, config_name)
        hint = did_you_mean_key(parent, key, valid)
        if not parent and not hint:  # `beta=0.2`: a group's key written without its group
            hint = group_key_hint(key, _composed(others, config_dir, config_name),
                                  _override_value(overrides, full_key))
        listing = f"; valid keys under {parent or 'the root'}: {', '.join(valid)}" if valid and not hint else ""
        return f"unknown key {full_key!r}{hint}{listing}"
    if cause is not None:
        full_key = getattr(cause, "full_key", "") or ""
        first = str(cause).splitlines()[0]
        problem = value_problem(full_key, getattr(cause, "value", None), first, getattr(cause, "object_type", None),
                                str(getattr(cause, "key", "") or ""), _override_value(overrides, full_key))
        if problem and full_key:
            return problem
        return f"{full_key}: {first}" if full_key else first
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _yaml_problem(error: Exception, config_dir: Path | None) -> str | None:
    """A YAML syntax error, with the file(s) of the config tree that do not parse and where."""
    import yaml

    chain, seen = [], error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    marked = next((e for e in chain if isinstance(e, yaml.MarkedYAMLError)), None)
    if marked is None:
        return None
    broken = []
    for directory in {config_dir or conf_dir(), conf_dir()}:
        for file in sorted(directory.rglob("*.yaml")):
            try:
                yaml.safe_load(file.read_text(encoding="utf-8"))
            except yaml.MarkedYAMLError as bad:
                mark = bad.problem_mark or bad.context_mark
                where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
                broken.append(f"{where}: {bad.context or ''} {bad.problem or ''}".replace("  ", " ").strip())
            except (OSError, yaml.YAMLError):
                continue
    what = "; ".join(broken) if broken else f"{marked.context or ''} {marked.problem or ''}".strip()
    return f"a config file is not valid YAML: {what}"


_OVERRIDE_KEY = re.compile(r"(?:Could not override '|Error merging override )(?P<key>[\w.]+)")


def _list_override(error: Exception, cause: Any) -> tuple[str, list[str]] | None:
    """(override key, valid keys of an entry) when the failing key sits inside a list entry the
    override gave (dataset.extra=[{...}]): OmegaConf then names only the entry's own key."""
    import dataclasses

    schema = getattr(cause, "object_type", None)
    match = _OVERRIDE_KEY.search(str(error))
    full_key = str(getattr(cause, "full_key", "") or "")
    if cause is None or match is None or "." in full_key or not dataclasses.is_dataclass(schema):
        return None
    if match["key"] == full_key:  # a key at the root (`beta=0.2`), not one inside a list entry
        return None
    return match["key"], [f.name for f in dataclasses.fields(schema)]


_MISSING = re.compile(r"Could not find '(?P<missing>[^']+)'")
_OPTIONS = re.compile(r"Available options in '(?P<group>[^']+)':\n(?P<options>(?:\t[^\n]*\n?)*)")


def _explain_missing_option(message: str) -> str:
    """Hydra's 'Could not find method/dpoo' plus its option list, as one line with a suggestion."""
    missing = _MISSING.search(message)
    listed = _OPTIONS.search(message)
    if not missing or not listed:
        return message.split("Config search path")[0].strip()
    group, _, option = missing["missing"].rpartition("/")
    # base_* are the typed schemas the options extend, not options a user picks.
    options = [o.strip() for o in listed["options"].splitlines() if o.strip() and not o.strip().startswith("base_")]
    return (f"{group}={option} is not an option of the {group!r} group{did_you_mean(option, options)}; "
            f"options: {', '.join(options)}")


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _override_value(overrides: list[str], key: str) -> str | None:
    """The value of `key` as the user typed it on the command line (None if not given there)."""
    for override in overrides:
        if _override_key(override) == key and "=" in override:
            return override.split("=", 1)[1]
    return None


def _composed(overrides: list[str], config_dir: Path | None, config_name: str) -> Any:
    """The config composed without the offending override (for suggestions), or None."""
    try:
        return compose_job(overrides, config_dir, config_name)
    except ConfigError:
        return None


def _keys_at(parent: str, overrides: list[str], config_dir: Path | None, config_name: str) -> list[str]:
    """The keys a node has once composed without the offending override (for suggestions)."""
    from omegaconf import OmegaConf

    cfg = _composed(overrides, config_dir, config_name)
    if cfg is None:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return [str(k) for k in node.keys()] if hasattr(node, "keys") else []


def add_code_dir(directory: Path) -> None:
    """User code (rewards.py, transforms) beside the config is importable as module.function."""
    from rlhf.core.usercode import EXTRA_DIRS

    if directory not in EXTRA_DIRS:
        EXTRA_DIRS.append(directory)


def resolved_config(cfg: Any) -> dict:
    """The job's config as plain data (what its run dir's config.yaml holds): every
    interpolation resolved, Hydra's node dropped, cache_dir and the code path made absolute, so
    that ranks and SLURM tasks find them where the launching process did."""
    from omegaconf import OmegaConf

    from rlhf.core.usercode import search_dirs
    from rlhf.launch.store import register_configs

    register_configs()
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    data.pop("hydra", None)
    data["cache_dir"] = str(Path(data.get("cache_dir", ".cache/rlhf")).expanduser().resolve())
    data["code_path"] = [str(d) for d in search_dirs(data.get("code_path") or [])]
    return data
