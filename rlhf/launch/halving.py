"""A sweep that stops its losers: synchronous successive halving over the sweep's settings.

    python -m rlhf.train -m hydra/sweeper=halving method.beta=0.01,0.03,0.1,0.3,1,3 seed=1,2 \\
        method.max_steps=90 hydra.sweeper.min_steps=10 hydra.sweeper.eta=3

Every point of the sweep trains to the first rung (step 10), where the job judges its policy (the
generation eval stage, rlhf.job.rungs), saves a checkpoint and stops. The settings (the points
that differ only by `seed`) are ranked by the mean of the rung's metric over their seeds; the
best 1/eta of them (at least one) resume from their checkpoints to the next rung (30), and so on
to the last rung, `method.max_steps`, where the survivors finish as ordinary runs. Each rung is
one launch of Hydra's launcher: one after another here (local), all at once (local_parallel),
or one SLURM job array (slurm). A job judged at a rung already does nothing when launched at it
again, so re-running the command retrains nothing; a job preempted mid-rung resumes as any job.

Why not Optuna's SuccessiveHalvingPruner or HyperbandPruner (or Ray Tune's ASHA): they are the
asynchronous variant (ASHA). A trial is promoted when its value is in the top 1/eta of the
values *reported at that rung so far* (optuna/pruners/_successive_halving.py:
_is_trial_promotable_to_next_rung, with the first eta-1 trials promoted whatever their value),
so when every point of a rung is judged at once, as a job array judges them, who is promoted
would depend on the order the values are reported in. Synchronous halving needs all the rung's
values first and then the top 1/eta: `survivors` below, one sort.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.core.errors import ConfigError
from rlhf.job.rungs import STOP_AT  # the variable the job's side reads
from rlhf.run import rundir
from rlhf.run.files import GENERATION_PREFIX

log = logging.getLogger("rlhf")

SWEEPER = "HalvingSweeper"  # the class name of hydra_plugins.rlhf_halving's sweeper
RECORD = rundir.HALVING  # in the sweep dir: the rungs, each setting's scores, what was spent
SEED = "seed"
# The plan rlhf.launch.cli.preflight made for this command, before Hydra started (one at most).
PLANNED: list[Schedule] = []


@dataclass
class Params:
    """The halving sweeper's settings (conf/hydra/sweeper/halving.yaml)."""

    rungs: list[int] | None = None
    min_steps: int | None = None
    eta: int = 3
    metric: str | None = None
    direction: str | None = None


@dataclass
class Schedule:
    """What a halving sweep will do, decided before any job starts."""

    rungs: list[int]  # the steps the settings are judged at, the last one method.max_steps
    eta: int
    metric: str
    direction: str  # maximize or minimize
    settings: dict[tuple[str, ...], list[int]] = field(default_factory=dict)  # setting -> point indices
    on_gpu: bool = False  # some point trains on CUDA devices (hardware.accelerator=cuda): it has GPU seconds


def setting_of(point: list[str]) -> tuple[str, ...]:
    """A point's setting: its overrides without the seed."""
    return tuple(o for o in point if o.split("=", 1)[0].lstrip("+~") != SEED)


def rungs_of(params: Params, max_steps: int) -> list[int]:
    """The rungs' steps: the ones given, or min_steps * eta^k below max_steps; max_steps last."""
    if params.rungs:
        steps = [int(s) for s in params.rungs]
    else:
        steps, step = [], int(params.min_steps or 0)
        while 0 < step < max_steps:
            steps.append(step)
            step *= params.eta
    return [*[s for s in steps if s != max_steps], max_steps]


def default_metric(runs: list[Any]) -> str:
    """The generation win rate when every job judges its generations with one, else the method's
    learning metric."""
    from rlhf.judge.checks import enabled

    if all(enabled(run) and run.evaluate.win_rate for run in runs):
        return "generation/win_rate"
    return runs[0].spec.metric


def measurable(metric: str, run: Any) -> str | None:
    """Why a job cannot give `metric` at a rung (None: it can)."""
    from rlhf.judge.checks import enabled, scorer_names

    if metric.startswith(GENERATION_PREFIX):
        name = metric[len(GENERATION_PREFIX):]
        if not enabled(run):
            return "its generation eval stage does not run"
        names = {"kl", "length", "finished", "empty", *(n for n, _, _ in scorer_names(run.evaluate))}
        if run.evaluate.win_rate:
            names |= {"win_rate", "length_controlled_win_rate"}
        if name not in names:
            return f"its stage gives {', '.join(sorted(f'generation/{n}' for n in names))}"
        return None
    if metric.startswith("eval_"):
        dataset = run.dataset
        has_eval = bool(dataset.eval or dataset.eval_split or dataset.val_set_size > 0)
        return None if has_eval else "it has no eval data (dataset.eval, eval_split or val_set_size)"
    return "a rung judges generation/<figure> (the generation eval stage) or eval_<figure> (the eval set)"


def plan(params: Params, points: list[list[str]], runs: list[Any]) -> Schedule:
    """The sweep's schedule, or every problem with it at once (ConfigError), before any job starts.

    Args:
        params: the sweeper's settings.
        points: every point's overrides, as Hydra's basic sweeper splits the command line.
        runs: each point's validated RunSpec (rlhf.launch.cli.preflight).

    Returns:
        The Schedule: rungs, eta, metric and its direction, the settings and their points.
    """
    from rlhf.config.checks import objective_direction

    problems = []
    if not isinstance(params.eta, int) or params.eta < 2:
        problems.append(f"hydra.sweeper.eta={params.eta}: a halving sweep keeps the best 1/eta of its settings at "
                        "each rung; eta is an integer of at least 2")
    lengths = sorted({run.method.max_steps for run in runs})
    if len(lengths) != 1 or lengths[0] <= 0:
        problems.append(f"method.max_steps={','.join(map(str, lengths))}: a halving sweep judges its points at steps "
                        "of one schedule; set method.max_steps to one positive number of optimizer steps "
                        "(the full run's length)")
    max_steps = lengths[-1]
    if params.rungs is None and params.min_steps is None:
        problems.append("hydra.sweeper: set the rungs (hydra.sweeper.rungs=[10,30]) or the first one "
                        "(hydra.sweeper.min_steps=10, then min_steps * eta^k up to method.max_steps)")
    elif params.rungs is not None:
        steps = [int(s) for s in params.rungs]
        if not steps or steps != sorted(set(steps)) or steps[0] < 1:
            problems.append(f"hydra.sweeper.rungs={list(params.rungs)}: rungs are increasing positive steps")
        beyond = [s for s in steps if s > max_steps > 0]
        if beyond:
            problems.append(f"hydra.sweeper.rungs={list(params.rungs)}: {', '.join(map(str, beyond))} beyond "
                            f"method.max_steps={max_steps}")
    elif not 0 < params.min_steps < max_steps:
        problems.append(f"hydra.sweeper.min_steps={params.min_steps}: the first rung is a step between 1 and "
                        f"method.max_steps={max_steps} (excluded)")
    settings: dict[tuple[str, ...], list[int]] = {}
    for index, point in enumerate(points):
        settings.setdefault(setting_of(point), []).append(index)
    if len(settings) < 2:
        problems.append(f"a halving sweep with {len(settings)} setting has nothing to stop: sweep at least two "
                        "settings (the seeds of one setting are judged together)")
    metric = params.metric or default_metric(runs)
    why = next(((points[i], w) for i, run in enumerate(runs) if (w := measurable(metric, run))), None)
    if why is not None:
        problems.append(f"hydra.sweeper.metric={metric}: the job {' '.join(why[0]) or '(no overrides)'} cannot give "
                        f"it: {why[1]}")
    if params.direction not in (None, "maximize", "minimize"):
        problems.append(f"hydra.sweeper.direction={params.direction}: one of maximize, minimize")
    if problems:
        raise ConfigError(problems)
    direction = objective_direction(metric, params.direction,
                                    runs[0].spec.greater_is_better if metric == runs[0].spec.metric else None)
    return Schedule(rungs_of(params, max_steps), params.eta, metric, direction, settings,
                    on_gpu=any(run.hardware.accelerator == "cuda" for run in runs))


def survivors(scores: dict[tuple[str, ...], float | None], eta: int, direction: str) -> list[tuple[str, ...]]:
    """The settings promoted from a rung: the best floor(n / eta) (at least one) by their score;
    a setting without a score (every seed failed) is never promoted.

    Args:
        scores: each setting's mean over its seeds of the rung's metric.
        eta: the halving factor.
        direction: maximize or minimize.

    Returns:
        The promoted settings, best first (ties keep the sweep's order).
    """
    scored = [s for s in scores if scores[s] is not None and math.isfinite(scores[s])]
    keep = max(1, len(scores) // eta) if scored else 0
    ranked = sorted(scored, key=lambda s: -scores[s] if direction == "maximize" else scores[s])
    return ranked[:keep]


def score(values: list[float | None]) -> float | None:
    """A setting's score at a rung: the mean over the seeds that gave a value."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(present) / len(present) if present else None


def value_at(run_dir: Path, step: int, last: bool, metric: str) -> float | None:
    """A job's metric at a rung: its rung record, or at the last rung its final metrics."""
    if run_dir is None or not Path(run_dir).is_dir():
        return None
    if last:
        if not rundir.is_finished(run_dir):
            return None
        value = rundir.flat_metrics(rundir.read_metrics(run_dir)).get(metric)
    else:
        record = next((r for r in rundir.read_rungs(run_dir) if r["step"] == step), None)
        value = (record or {}).get("metrics", {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def spent_at(run_dir: Path | None, step: int, last: bool) -> dict[str, Any] | None:
    """What a job's session spent to reach a rung.

    Args:
        run_dir: the job's run dir (None: it has none yet).
        step: the rung's step.
        last: the rung is the last one (the job finished there).

    Returns:
        Its rung record, or at the last rung its metrics.json, each with `cpu_seconds` and
        `gpu_seconds`; None when it left no record (e.g. it failed).
    """
    if run_dir is None or not Path(run_dir).is_dir():
        return None
    if last:
        return rundir.read_metrics(run_dir) if rundir.is_finished(run_dir) else None
    return next((r for r in rundir.read_rungs(run_dir) if r["step"] == step), None)


def total(records: list[dict[str, Any] | None], key: str) -> float | None:
    """The sum of a figure over records.

    Args:
        records: the jobs' records at a rung (spent_at), or the sweep's rungs.
        key: the figure (cpu_seconds, gpu_seconds).

    Returns:
        The sum (0 for no records); None when one is unknown (a job left no record, or its
        record lacks the figure).
    """
    values = [(r or {}).get(key) for r in records]
    if not all(isinstance(v, (int, float)) for v in values):
        return None
    return round(math.fsum(values), 2)


def gpu_total(records: list[dict[str, Any] | None], on_gpu: bool) -> float | None:
    """The jobs' GPU seconds summed (rlhf.cluster.devices.gpu_seconds: a session's wall seconds
    times the GPUs the job holds); a job on the CPU adds none (its record says null).

    Args:
        records: each job's record at the rung (spent_at); None for a job that left none.
        on_gpu: some point of the sweep trains on CUDA devices.

    Returns:
        The sum; None for a sweep on the CPU (it has no GPU seconds, not zero), or when a job
        left no record or its record has no gpu_seconds (unknown).
    """
    if not on_gpu or any(r is None or "gpu_seconds" not in r for r in records):
        return None
    return round(math.fsum(r["gpu_seconds"] for r in records if isinstance(r["gpu_seconds"], (int, float))), 2)


def label(setting: tuple[str, ...], shared: frozenset[str] = frozenset()) -> str:
    """A setting as its overrides (those every setting shares left out when given)."""
    return " ".join(o for o in setting if o not in shared) or "(no overrides)"


class Driver:
    """Runs a Schedule through a Hydra launcher, rung by rung, and records what it did."""

    def __init__(self, schedule: Schedule, points: list[list[str]], launcher: Any, sweep_dir: Path):
        self.schedule, self.points, self.launcher, self.sweep_dir = schedule, points, launcher, sweep_dir
        self.subdirs: dict[int, str] = {}  # point -> its run dir's name, fixed by the first rung
        # What every setting shares (cache_dir, max_steps, ...) says nothing of which is which.
        self.shared = frozenset.intersection(*(frozenset(s) for s in schedule.settings))
        self.by_label = {label(s, self.shared): s for s in schedule.settings}
        self.record: dict[str, Any] = {"metric": schedule.metric, "direction": schedule.direction,
                                       "eta": schedule.eta, "rungs": [], "shared": sorted(self.shared),
                                       "settings": [label(s, self.shared) for s in schedule.settings],
                                       "on_gpu": schedule.on_gpu}

    def run(self) -> list[Any]:
        """Every rung, then the record; returns the last rung's job returns."""
        alive = list(self.schedule.settings)
        returns: list[Any] = []
        for number, step in enumerate(self.schedule.rungs):
            last = number == len(self.schedule.rungs) - 1
            started = time.time()
            returns = self.launch(alive, step, last, number)
            seconds = time.time() - started
            scores = {s: score([value_at(self.run_dir(i), step, last, self.schedule.metric)
                                for i in self.schedule.settings[s]]) for s in alive}
            promoted = [] if last else survivors(scores, self.schedule.eta, self.schedule.direction)
            spent = [spent_at(self.run_dir(i), step, last) for s in alive for i in self.schedule.settings[s]]
            self.record["rungs"].append({
                "step": step, "last": last, "seconds": round(seconds, 2),
                "cpu_seconds": total(spent, "cpu_seconds"), "gpu_seconds": gpu_total(spent, self.schedule.on_gpu),
                "settings": [{"setting": label(s, self.shared), "score": scores[s], "promoted": s in promoted,
                              "jobs": [self.subdirs.get(i) for i in self.schedule.settings[s]]} for s in alive]})
            self.write()
            log.info("halving: rung %d (step %d): %s", number + 1, step, "; ".join(
                f"{label(s, self.shared)}: {scores[s] if scores[s] is None else f'{scores[s]:.4g}'}"
                f"{' promoted' if s in promoted else ''}" for s in alive))
            alive = promoted
        self.record["steps"] = self.spent()
        self.write()
        return returns

    def launch(self, alive: list[tuple[str, ...]], step: int, last: bool, number: int) -> list[Any]:
        indices = [i for s in alive for i in self.schedule.settings[s]]
        batch = []
        for i in indices:
            overrides = list(self.points[i])
            if not last:
                overrides.append(f"++hydra.job.env_set.{STOP_AT}={step}")
            if i in self.subdirs:  # the run dir it has: the first rung named it
                overrides.append(f"hydra.sweep.subdir='{self.subdirs[i]}'")
            batch.append(overrides)
        log.info("halving: rung %d of %d, step %d: %d job(s)", number + 1, len(self.schedule.rungs), step, len(batch))
        returns = list(self.launcher.launch(batch, initial_job_idx=0 if number == 0 else len(self.points)))
        if number == 0:
            for i, ret in zip(indices, returns):
                self.subdirs[i] = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)).name
        return returns

    def run_dir(self, index: int) -> Path | None:
        name = self.subdirs.get(index)
        return self.sweep_dir / name if name else None

    def spent(self) -> dict[str, Any]:
        """Optimizer steps trained, against every point run to the last rung, and the CPU and GPU
        seconds the jobs' sessions spent (None when a job's is unknown; GPU: None on the CPU)."""
        reached: dict[int, int] = {}
        for rung in self.record["rungs"]:
            for entry in rung["settings"]:
                for i in self.schedule.settings[self.by_label[entry["setting"]]]:
                    reached[i] = rung["step"]
        trained = sum(reached.values())
        full = len(self.points) * self.schedule.rungs[-1]
        rungs = self.record["rungs"]
        return {"trained": trained, "full_sweep": full, "share": trained / full if full else None,
                "cpu_seconds": total(rungs, "cpu_seconds"),
                "gpu_seconds": total(rungs, "gpu_seconds") if self.schedule.on_gpu else None}

    def write(self) -> None:
        rundir.atomic_write(self.sweep_dir / RECORD, json.dumps(self.record, indent=2) + "\n")


def split(arguments: list[str]) -> list[list[str]]:
    """Every point of the command line's sweep, as Hydra's basic sweeper splits it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(arguments))
    return [list(point) for point in BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]]


def sweep(params: Params, arguments: list[str], launcher: Any, sweep_dir: Path) -> list[Any]:
    """The halving sweep of `arguments` (Hydra's task overrides) through `launcher`.

    Args:
        params: the sweeper's settings (checked again when the command did not plan them).
        arguments: the command's overrides, sweeps included.
        launcher: the Hydra launcher the sweeper was set up with.
        sweep_dir: hydra.sweep.dir.

    Returns:
        The last rung's job returns (what Hydra's multirun returns).
    """
    points = split(arguments)
    if not PLANNED or sum(len(v) for v in PLANNED[0].settings.values()) != len(points):
        raise ConfigError("hydra/sweeper=halving: the sweep was not planned before it started; run it as "
                          "python -m rlhf.train -m hydra/sweeper=halving ...")
    schedule = PLANNED[0]
    log.info("halving sweep: %d settings x %s, rungs at steps %s, eta %d, by %s (%s)", len(schedule.settings),
             "/".join(sorted({str(len(v)) for v in schedule.settings.values()})) + " seed(s)",
             ", ".join(map(str, schedule.rungs)), schedule.eta, schedule.metric, schedule.direction)
    return Driver(schedule, points, launcher, sweep_dir).run()
