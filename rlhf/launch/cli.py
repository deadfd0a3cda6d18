"""The command line of `python -m rlhf.train`: Hydra runs here and nowhere else.

`launch(task)` parses the command line as Hydra does, composes and validates *every job* of
the command (all the points of a sweep) before Hydra starts any of them, and reports a bad
config in one message that names the key, the value and the valid choices. Then it checks
what can be checked before a job starts: that this machine has the GPU the jobs ask for (when
they train here), and every row of the jobs' local data whose type needs no tokenizer. Then it
hands over to `hydra.main`, which runs `task` once per job.

Each job is composed once here and validated once: a job Hydra then runs in this process takes
the RunSpec validated here (`validated_before`) instead of validating its config again. Hydra
itself composes each job again to run it (its launchers take a job's overrides, not a composed
config; its basic sweeper also composes a batch to check it first): that composition is Hydra's.

Nothing here imports torch or TRL, so `--help`, `--cfg job`, a config error and a bad row of a
string-family dataset answer fast.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config.tree import CONFIG_NAME, conf_dir
from rlhf.core.errors import ConfigError, DataError, RlhfError
from rlhf.launch.compose import add_code_dir, compose_with_choices, resolved_config

# Modes in which Hydra only prints something: no job runs, so there is nothing to validate.
# (`--cfg` prints a job's config: that one is validated, so what it shows would run.)
_PRINT_ONLY = ("help", "hydra_help", "info", "shell_completion")


def _parse_overrides(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot read the override {error.override!r}: {_parse_problem(error)} "
                          "(the form is key=value; quote values that hold brackets, braces, commas or "
                          "spaces, e.g. 'dataset.eval=[]' or \"key='a, b'\")") from None


def _parse_problem(error: Any) -> str:
    """What is wrong with an override Hydra's parser refused, in words (its message starts with the
    parser's exception class, LexerNoViableAltException: ...)."""
    override = str(error.override)
    if "=" not in override:
        key, _, value = override.partition(" ")
        return ("no '=' between the key and its value" + (f": write {key}={value.strip()}" if value.strip() else ""))
    first = error.message.splitlines()[0]
    return re.sub(r"^\w+(Exception|Error): ", "", first)


def _is_hydra_key(override: Any) -> bool:
    return override.get_key_element().lstrip("+~").startswith("hydra")


def _job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command would run (a single run is one job)."""
    # Hydra's own settings (run dir, launcher, sweeper) do not change what a job trains.
    parsed = [o for o in _parse_overrides(overrides) if not _is_hydra_key(o)]
    if not multirun:
        return [[o.input_line for o in parsed]]
    fixed = [o for o in parsed if not o.is_sweep_override()]
    swept = [o for o in parsed if o.is_sweep_override()]
    if any(not o.is_discrete_sweep() for o in swept):
        # A search space (interval, ...) is sampled by its sweeper: validate the fixed part.
        return [[o.input_line for o in fixed]]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


# The runs validated by this process's command, by their resolved config (validated_before).
_VALIDATED: dict[str, Any] = {}
# The deletion overrides of the companion options the command's jobs leave behind: Hydra gets
# them too, so that it composes each job as preflight validated it.
DROPPED: list[str] = []


def _key(resolved: dict) -> str:
    import json

    return json.dumps(resolved, sort_keys=True, default=str)


def validated_before(resolved: dict) -> Any:
    """The RunSpec this process validated for a job whose resolved config is `resolved` (None
    when it did not: a job in a process of its own, an Optuna trial's sampled point)."""
    return _VALIDATED.get(_key(resolved))


def preflight(argv: list[str]) -> Any:
    """Compose and validate every job of this command line; raise ConfigError on the first bad one.

    Args:
        argv: the command line after the program name, as Hydra reads it.

    Returns:
        The first job's validated run (None when the command only prints). Every job's run is
        kept for `validated_before`.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in _PRINT_ONLY):
        return None
    config_dir = Path(args.config_path).resolve() if args.config_path else None
    if args.config_dir:  # an extra directory of config options, as Hydra's --config-dir
        extra = [f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]"]
    else:
        extra = []
    config_name = args.config_name or CONFIG_NAME
    add_code_dir(config_dir or conf_dir())
    jobs = [_validated_job(job, extra, config_dir, config_name, args.multirun)
            for job in _job_overrides(args.overrides, args.multirun)]
    DROPPED[:] = _settle_companions(jobs)
    if not args.cfg:  # --cfg only prints: nothing will run here
        hydra = _HydraNode(args, extra + jobs[0].overrides, config_dir, config_name)
        _check_machine(jobs, args, hydra)
        _check_halving(jobs, args, hydra)
        _check_rows(jobs, args.multirun)
        _VALIDATED.update((_key(job.resolved), job.run) for job in jobs)
    return jobs[0].run


@dataclass
class _Job:
    """One job of the command: its overrides, its config composed and resolved, its run, and the
    companion options it leaves behind (rlhf.launch.companions)."""

    overrides: list[str]
    resolved: dict
    run: Any
    left: list[Any]
    sweeper: str | None = None  # the hydra/sweeper option its configs choose (a command-line one aside)


def _validated_job(overrides: list[str], extra: list[str], config_dir: Path | None, config_name: str,
                   multirun: bool) -> _Job:
    """The job composed as Hydra will, without the companion options it leaves behind, and
    validated; a sweep job's problems name the job."""
    from rlhf.config.validate import validate
    from rlhf.launch.companions import left_behind

    def compose(job: list[str]) -> tuple[Any, dict[str, Any]]:
        return compose_with_choices(extra + job, config_dir, config_name)

    composed, choices = compose(overrides)
    left = left_behind(overrides, composed, choices, compose)
    if left:
        composed, _ = compose([*overrides, *(item.deletion for item in left)])
    resolved = resolved_config(composed)
    try:
        return _Job(overrides, resolved, validate(resolved), left, choices.get("hydra/sweeper"))
    except ConfigError as error:
        if multirun:
            raise ConfigError([f"in the sweep job {' '.join(overrides)}: {p}" for p in error.problems]) from None
        raise


def _settle_companions(jobs: list[_Job]) -> list[str]:
    """The companion options the command's jobs leave behind, said once each on stderr; returns
    the deletion overrides Hydra gets, the same for every job (rlhf.launch.companions)."""
    from rlhf.launch.companions import same_for_every_job

    deletions = same_for_every_job([job.left for job in jobs], [job.overrides for job in jobs])
    for sentence in dict.fromkeys(item.sentence() for job in jobs for item in job.left):
        print(f"note: {sentence}", file=sys.stderr)
    return deletions


# Hydra launchers that run the jobs on this machine (basic: in this process; submitit's local
# executor and joblib: in processes of their own). Any other (SLURM, ...) sends them elsewhere.
LOCAL_LAUNCHERS = ("BasicLauncher", "LocalLauncher", "JoblibLauncher")


def _check_machine(jobs: list[_Job], args: Any, launcher: _HydraNode) -> None:
    """This machine has what the jobs need (a CUDA driver for hardware.accelerator=cuda), when
    the jobs train here. A SLURM login node has no GPU while its compute nodes have: with
    hydra/launcher=slurm the job checks its own node instead (rlhf.job.process.configure_process).
    Jobs that read their config back from a run dir never run this (it is not a RUN_CHECK). A
    sweep sent to SLURM needs sbatch here."""
    from rlhf.config.checks import MACHINE_CHECKS

    problems = list(dict.fromkeys(p for job in jobs for check in MACHINE_CHECKS for p in check(job.run)))
    if problems and launcher.trains_here():
        raise ConfigError(problems)
    if args.multirun and not sbatch_on_path() and _may_choose_a_launcher(args.overrides) \
            and launcher.name() in SLURM_LAUNCHERS:
        raise ConfigError("hydra/launcher=slurm submits the sweep's jobs with sbatch, which is not on PATH on this "
                          "machine: run the command on a SLURM login node (where sbatch is), or run the jobs here "
                          "with hydra/launcher=local (one after another) or hydra/launcher=local_parallel")


SLURM_LAUNCHERS = ("SlurmLauncher",)


def sbatch_on_path() -> bool:
    """Whether this machine can submit SLURM jobs (sbatch on PATH, as submitit calls it)."""
    return shutil.which("sbatch") is not None


def _may_choose_a_launcher(overrides: list[str]) -> bool:
    """Whether the command line may choose a launcher other than the shipped default (which runs
    the jobs here): a hydra/launcher override, or an experiment, which may select one."""
    return any(o.lstrip("+~").startswith(("hydra/launcher", "experiment")) for o in overrides)


class _HydraNode:
    """The Hydra node the command's sweep would run with (its launcher, its sweeper), read from
    the composed config: the command line's hydra/... and hydra.* overrides (a sweep of them
    aside), and the configs and experiment the first job selects, which may choose a launcher or
    a sweeper too. Composed at most once, and only when a check needs it, as it costs ~0.3 s.
    The command line's hydra.sweeper.<setting> overrides are left out of the composition (Hydra
    refuses one the chosen sweeper's config lacks): the sweeper's check reads them itself."""

    def __init__(self, args: Any, job: list[str], config_dir: Path | None, config_name: str):
        self.args, self.job, self.config_dir, self.config_name = args, job, config_dir, config_name
        self._node: Any = None
        self._composed = False

    def name(self) -> str:
        """The launcher class's name ("" when Hydra refuses the overrides: it will say why)."""
        return self._class_name("launcher")

    def sweeper_name(self) -> str:
        """The sweeper class's name ("" when Hydra refuses the overrides)."""
        return self._class_name("sweeper")

    def sweeper_settings(self) -> dict[str, Any]:
        """The composed sweeper config's settings, without its _target_ ({} when Hydra refuses
        the overrides)."""
        from omegaconf import OmegaConf

        node = self._hydra()
        if node is None or node.get("sweeper") is None:
            return {}
        settings = OmegaConf.to_container(node.sweeper, resolve=True)
        settings.pop("_target_", None)
        return settings

    def trains_here(self) -> bool:
        """A single run (without -m) always trains here, whatever launcher is configured (Hydra
        launches multirun jobs only); a sweep does when its launcher is local."""
        return not self.args.multirun or self.name() in ("", *LOCAL_LAUNCHERS)

    def _class_name(self, plugin: str) -> str:
        from omegaconf import OmegaConf

        node = self._hydra()
        return "" if node is None else str(OmegaConf.select(node, f"{plugin}._target_") or "").rsplit(".", 1)[-1]

    def _hydra(self) -> Any:
        if not self._composed:
            self._node, self._composed = self._compose(), True
        return self._node

    def _compose(self) -> Any:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        hydra_overrides = [o.input_line for o in _parse_overrides(self.args.overrides)
                           if _is_hydra_key(o) and not o.is_sweep_override() and not _is_sweeper_setting(o)]
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(self.config_dir or conf_dir()), version_base="1.3"):
                cfg = compose(config_name=self.config_name, overrides=[*hydra_overrides, *self.job],
                              return_hydra_config=True)
        except Exception:  # Hydra itself will refuse these overrides
            return None
        finally:
            GlobalHydra.instance().clear()
        return cfg.hydra


def _is_sweeper_setting(override: Any) -> bool:
    return override.key_or_group.startswith("hydra.sweeper.")


def _selects_a_sweeper(jobs: list[_Job], args: Any) -> bool:
    """Whether the command may run a sweeper other than Hydra's basic one: the command line names
    one (hydra/sweeper=...), or the configs or experiment of a job choose one. Only then is the
    Hydra node composed to see which (nothing is composed for other commands)."""
    return (any(o.lstrip("+~").startswith("hydra/sweeper") for o in args.overrides)
            or any(job.sweeper not in (None, "basic") for job in jobs))


def _check_halving(jobs: list[_Job], args: Any, hydra: _HydraNode) -> None:
    """A halving sweep planned before any job starts, whether the command line selects it
    (hydra/sweeper=halving) or a config or experiment does (`override /hydra/sweeper: halving`,
    its settings under hydra.sweeper): its rungs, metric and settings checked against every job
    (rlhf.launch.halving.plan), the plan kept for the sweeper. The composed Hydra node decides
    (its sweeper's _target_), composed only when the command or a job chooses a sweeper."""
    if not _selects_a_sweeper(jobs, args):
        return
    from rlhf.launch import halving

    named = any(o.lstrip("+~").startswith("hydra/sweeper=halving") for o in args.overrides)
    if named and not args.multirun:
        raise ConfigError("hydra/sweeper=halving runs a sweep: add -m (python -m rlhf.train -m hydra/sweeper=halving "
                          "...)")
    if not args.multirun or hydra.sweeper_name() != halving.SWEEPER:
        return  # a single run of a config that selects it: Hydra runs no sweeper
    params = halving.Params()
    settings = dict(hydra.sweeper_settings())
    for override in _parse_overrides(args.overrides):
        if _is_sweeper_setting(override):
            settings[override.key_or_group[len("hydra.sweeper."):]] = override.value()
    for name, value in settings.items():
        if name not in params.__dataclass_fields__:
            raise ConfigError(f"hydra.sweeper.{name}={value}: the halving sweeper has no such setting; its "
                              f"settings: {', '.join(params.__dataclass_fields__)}")
        setattr(params, name, list(value) if name == "rungs" and value is not None else value)
    halving.PLANNED[:] = [halving.plan(params, [job.overrides for job in jobs], [job.run for job in jobs])]


def _check_rows(jobs: list[_Job], multirun: bool) -> None:
    """Every row of every job's local data whose type needs no tokenizer, each distinct source
    once, and the rows each job's val_set_size leaves on both sides, before the first job starts
    (rlhf.data.preflight.check_rows_before_jobs)."""
    from rlhf.data.preflight import check_rows_before_jobs

    done: dict[str, Any] = {}
    checked = []
    for job in jobs:
        try:
            checked += check_rows_before_jobs(job.run, done)
        except ConfigError as error:  # a held-out share that leaves no rows on one side
            if multirun:
                raise ConfigError([f"in the sweep job {' '.join(job.overrides)}: {p}" for p in error.problems]) from None
            raise
        except DataError as error:
            if multirun:
                raise DataError(f"in the sweep job {' '.join(job.overrides)}: {error}") from None
            raise
    fresh = [c for c in checked if not c.earlier]
    if fresh:
        print(f"data: checked {sum(c.rows for c in fresh)} rows of {len(fresh)} local source(s) before the "
              f"first job in {sum(c.seconds for c in fresh):.2f}s ({', '.join(c.label for c in fresh)})",
              file=sys.stderr)


def _sweeper_direction(argv: list[str], run: Any) -> list[str]:
    """With hydra/sweeper=optuna, the objective named in the config decides the direction: the
    override that says it, if the command does not."""
    if run is None or "hydra/sweeper=optuna" not in argv or any(a.startswith("hydra.sweeper.direction=")
                                                                 for a in argv):
        return []
    from rlhf.config.checks import objective_direction, objective_metric

    direction = objective_direction(objective_metric(run), run.objective.direction, run.spec.greater_is_better)
    return [f"hydra.sweeper.direction={direction}"]


def with_overrides(argv: list[str], extra: list[str]) -> list[str]:
    """`argv` with the overrides `extra` placed right after its own overrides: Hydra's parser reads
    one run of overrides, so one placed after a flag (`--cfg job ~tuning`) would be refused."""
    from hydra._internal.utils import get_args_parser

    own = get_args_parser().parse_args(argv).overrides
    if not extra or not own:
        return [*argv, *extra]
    last = len(argv) - 1 - argv[::-1].index(own[-1])
    return [*argv[:last + 1], *extra, *argv[last + 1:]]


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


# Ctrl-C before a job saved anything (while composing, checking rows, between jobs).
INTERRUPTED = ("interrupted (Ctrl-C). Re-run the same command to go on: finished jobs are skipped and a job with a "
               "checkpoint resumes from it")


def plugins_visible() -> None:
    """Hydra finds sweepers only by walking the `hydra_plugins` namespace package's path, once,
    the first time it needs a plugin; an editable install (pip install -e) puts rlhf's own
    (hydra_plugins/rlhf_halving, beside the rlhf package) on no such path. Added here, before
    anything of Hydra's runs; an installed copy has it in site-packages already."""
    import hydra_plugins

    import rlhf

    own = str(Path(rlhf.__file__).resolve().parent.parent / "hydra_plugins")
    if Path(own).is_dir() and own not in [str(Path(p).resolve()) for p in hydra_plugins.__path__]:
        hydra_plugins.__path__.append(own)
    from hydra.core.plugins import Plugins

    Plugins.instance()  # the scan, now, while the path holds it


def launch(task: Callable[[Any], Any]) -> None:
    """Validate the whole command, then let Hydra run `task` once per job. Ctrl-C at any point is
    one line and exit 130 (a training job first saves a checkpoint: rlhf.job.preemption)."""
    try:
        argv = _absolute_config_path(sys.argv[1:])
        sys.argv[1:] = argv
        if "--help" in argv or "-h" in argv:
            from rlhf.launch.help import render

            print(render(conf_dir(), [a for a in argv if not a.startswith("-")]))
            return
        plugins_visible()
        _checked(argv)
        _run_hydra(task, argv)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)


def _checked(argv: list[str]) -> None:
    """preflight, its refusal one message and exit 2."""
    try:
        run = preflight(argv)
        sys.argv[1:] = with_overrides(argv, [*_sweeper_direction(argv, run), *DROPPED])
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _run_hydra(task: Callable[[Any], Any], argv: list[str]) -> None:
    """Hydra runs `task` once per job; a sweep with jobs that did not finish exits 1."""
    import hydra

    from rlhf.launch.store import register_configs

    register_configs()
    from rlhf.cluster import devices

    devices.note_host_gpus(os.environ)  # a local_parallel sweep's jobs each take their slice
    add_code_dir(_config_path_arg(argv) or conf_dir())
    main = hydra.main(config_path=str(conf_dir()), config_name=CONFIG_NAME, version_base="1.3")(task)
    main()
    from rlhf.launch.sweep import FAILED_JOBS

    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) of the sweep did not finish: "
              + ", ".join(str(p) for p in FAILED_JOBS), file=sys.stderr)
        sys.exit(1)
