"""The launching side of every entry point: Hydra runs here and nowhere else.

`launch(task)` parses the command line as Hydra does, composes and validates *every job* of
the command (all the points of a sweep) before Hydra starts any of them, and reports a bad
config in one message that names the key, the value and the valid choices. Then it hands
over to `hydra.main`, which runs `task` once per job.

Nothing here imports torch or TRL, so `--help`, `--cfg job` and a config error answer fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.errors import ConfigError, RlhfError, did_you_mean

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_NAME = "config"

# Modes in which Hydra only prints something: no job runs, so there is nothing to validate.
# (`--cfg` prints a job's config: that one is validated, so what it shows would run.)
_PRINT_ONLY = ("help", "hydra_help", "info", "shell_completion")


def conf_dir() -> Path:
    if not (CONF_DIR / f"{CONFIG_NAME}.yaml").is_file():
        raise RlhfError(f"the config tree is missing: expected {CONF_DIR / CONFIG_NAME}.yaml "
                        "(install the project with `pip install -e .` from its checkout)")
    return CONF_DIR


def _job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command would run (a single run is one job)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot read the override {error.override!r}: {error.message.splitlines()[0]} "
                          "(the form is key=value; quote values that hold brackets, braces, commas or "
                          "spaces, e.g. 'dataset.eval=[]' or \"key='a, b'\")") from None
    # Hydra's own settings (run dir, launcher, sweeper) do not change what a job trains.
    parsed = [o for o in parsed if not o.get_key_element().lstrip("+~").startswith("hydra")]
    if not multirun:
        return [[o.input_line for o in parsed]]
    fixed = [o for o in parsed if not o.is_sweep_override()]
    swept = [o for o in parsed if o.is_sweep_override()]
    if any(not o.is_discrete_sweep() for o in swept):
        # A search space (interval, ...) is sampled by its sweeper: validate the fixed part.
        return [[o.input_line for o in fixed]]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def compose_job(overrides: list[str], config_dir: Path | None = None,
                config_name: str = CONFIG_NAME) -> Any:
    """Compose one job's config as Hydra will (without Hydra's own node), or raise ConfigError."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlhf.config.store import register_configs

    register_configs()
    _add_code_dir(config_dir or conf_dir())
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir or conf_dir()), version_base="1.3"):
        try:
            return compose(config_name=config_name, overrides=overrides)
        except Exception as error:  # Hydra raises several types; each becomes one message
            raise ConfigError(explain_compose_error(error, overrides, config_dir, config_name)) from None


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
        return f"{override_key} entry, key {key!r}: {str(cause).splitlines()[0]}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        full_key = getattr(cause, "full_key", "") or ""
        parent, _, key = full_key.rpartition(".")
        others = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != full_key]
        valid = _keys_at(parent, others, config_dir, config_name)
        hint = did_you_mean(key, valid)
        listing = f"; valid keys under {parent or 'the root'}: {', '.join(valid)}" if valid and not hint else ""
        return f"unknown key {full_key!r}{hint}{listing}"
    if cause is not None:
        full_key = getattr(cause, "full_key", "") or ""
        first = str(cause).splitlines()[0]
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


def _keys_at(parent: str, overrides: list[str], config_dir: Path | None, config_name: str) -> list[str]:
    """The keys a node has once composed without the offending override (for suggestions)."""
    from omegaconf import OmegaConf

    try:
        cfg = compose_job(overrides, config_dir, config_name)
    except ConfigError:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return [str(k) for k in node.keys()] if hasattr(node, "keys") else []


def _add_code_dir(directory: Path) -> None:
    """User code (rewards.py, transforms) beside the config is importable as module.function."""
    from rlhf.usercode import EXTRA_DIRS

    if directory not in EXTRA_DIRS:
        EXTRA_DIRS.append(directory)


def preflight(argv: list[str]) -> Any:
    """Compose and validate every job of this command line; raise ConfigError on the first bad one.
    Returns the first job's validated run (None when the command only prints)."""
    from hydra._internal.utils import get_args_parser

    from rlhf.config.validate import validate

    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in _PRINT_ONLY):
        return None
    config_dir = Path(args.config_path).resolve() if args.config_path else None
    if args.config_dir:  # an extra directory of config options, as Hydra's --config-dir
        extra = [f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]"]
    else:
        extra = []
    config_name = args.config_name or CONFIG_NAME
    _add_code_dir(config_dir or conf_dir())
    first = None
    for job in _job_overrides(args.overrides, args.multirun):
        cfg = compose_job(extra + job, config_dir, config_name)
        try:
            run = validate(cfg)
        except ConfigError as error:
            if args.multirun:
                raise ConfigError([f"in the sweep job {' '.join(job)}: {p}" for p in error.problems]) from None
            raise
        first = first or run
    return first


def _sweeper_direction(argv: list[str], run: Any) -> list[str]:
    """With hydra/sweeper=optuna, the objective named in the config decides the direction."""
    if run is None or "hydra/sweeper=optuna" not in argv or any(a.startswith("hydra.sweeper.direction=")
                                                                 for a in argv):
        return argv
    from rlhf.config.checks import objective_direction, objective_metric

    direction = objective_direction(objective_metric(run), run.objective.direction, run.spec.greater_is_better)
    return [*argv, f"hydra.sweeper.direction={direction}"]


def _config_path_arg(argv: list[str]) -> Path | None:
    from hydra._internal.utils import get_args_parser

    path = get_args_parser().parse_args(argv).config_path
    return Path(path).resolve() if path else None


def _absolute_config_path(argv: list[str]) -> list[str]:
    """Hydra reads a relative --config-path against the app's source file; users mean the cwd."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--config-path", "-cp"):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = str(Path(out[i + 1]).resolve())
            elif arg.startswith(flag + "="):
                out[i] = f"{flag}={Path(arg.split('=', 1)[1]).resolve()}"
    return out


def launch(task: Callable[[Any], Any]) -> None:
    """Validate the whole command, then let Hydra run `task` once per job."""
    import hydra

    from rlhf.config.store import register_configs

    argv = _absolute_config_path(sys.argv[1:])
    sys.argv[1:] = argv
    try:
        if "--help" in argv or "-h" in argv:
            from rlhf.help import render

            print(render(conf_dir(), [a for a in argv if not a.startswith("-")]))
            return
        run = preflight(argv)
        sys.argv[1:] = _sweeper_direction(argv, run)
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    register_configs()
    _add_code_dir(_config_path_arg(argv) or conf_dir())
    main = hydra.main(config_path=str(conf_dir()), config_name=CONFIG_NAME, version_base="1.3")(task)
    main()
    from rlhf.sweep import FAILED_JOBS

    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) of the sweep did not finish: "
              + ", ".join(str(p) for p in FAILED_JOBS), file=sys.stderr)
        sys.exit(1)
