"""What the bench sections that time the platform against a plain TRL script share: running
commands together on rotating cores (`run_together`, `pair`), reading each side's step stamps,
and the paired ratios of their step times (methods; lengths runs its sides one at a time with
`run_together` and takes `ratios`, `parameters` and the stamp readers from here).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path

from rlhf.config.tree import REPO


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", WANDB_MODE="disabled",
               PYTHONPATH=str(REPO) + os.pathsep + out.get("PYTHONPATH", ""), TQDM_DISABLE="1",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    return {**out, **(extra or {})}


SWAP_EVERY_S = 0.25


def _pin(pid: int, core: int) -> None:
    """Pin every thread of a running process to one core (a thread that just ended is skipped)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
        except (ProcessLookupError, FileNotFoundError):
            pass


def _start(command: list[str], cwd: Path, index: int, core: int | None, extra: dict[str, str] | None) -> dict:
    log = open(cwd / f"together-{index}.log", "w")  # noqa: SIM115 - closed when the process ends
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    return {"start": time.time(), "log": log,
            "proc": subprocess.Popen(command, cwd=cwd, env=env(extra), stdout=subprocess.DEVNULL, stderr=log,
                                     preexec_fn=pin)}


def run_together(commands: list[list[str]], cwd: Path, cores: list[int] | None,
                 envs: list[dict[str, str] | None] | None = None) -> list[dict]:
    """Start the commands at the same moment and wait for all. With `cores` (one per command),
    each runs pinned to its own core and the cores rotate among the commands every
    SWAP_EVERY_S, so each spends the same share of its time on each core: a core that a busy
    neighbour slows for a while slows them alike. `envs`: each command's extra environment.
    Per command: start time, wall seconds, peak RSS (MiB, from wait4)."""
    envs = envs or [None] * len(commands)
    procs = [_start(command, cwd, index, cores[index] if cores else None, envs[index])
             for index, command in enumerate(commands)]
    out: dict[int, dict] = {}
    turn = 0
    while len(out) < len(procs):
        time.sleep(SWAP_EVERY_S if cores else 0.05)
        turn += 1
        for index, entry in enumerate(procs):
            proc = entry["proc"]
            if index in out:
                continue
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                if cores:
                    _pin(proc.pid, cores[(index + turn) % len(cores)])
                continue
            entry["log"].close()
            if os.waitstatus_to_exitcode(status) != 0:
                tail = (cwd / f"together-{index}.log").read_text()[-3000:]
                raise RuntimeError(f"{' '.join(commands[index])} failed:\n{tail}")
            out[index] = {"start": entry["start"], "seconds": time.time() - entry["start"],
                          "rss": usage.ru_maxrss / 1024}
    return [out[index] for index in range(len(procs))]


def platform_stamps(run_dir: Path) -> dict:
    """Each logged step's wall and CPU stamps, and its loss, from the run's log history."""
    history = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    steps = [h for h in history if "loss" in h]
    return {"stamps": [h["time"] for h in steps], "cpu": [h["cpu_time"] for h in steps],
            "losses": [h["loss"] for h in steps]}


def plain_stamps(out: Path) -> dict:
    times = json.loads((out / "times.json").read_text())
    return {"stamps": times["steps"], "cpu": times["cpu"]}


def _median_interval(stamps: list[float]) -> float:
    """The median interval between consecutive stamps, in ms."""
    return 1000 * statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def _median_step(run: dict, key: str) -> float:
    """A run's median interval between optimizer steps after the first, in ms."""
    return _median_interval(run[key][1:])


def summarise(runs: list[dict]) -> dict:
    return {"median_step_ms": statistics.median(_median_step(run, "stamps") for run in runs),
            "median_step_cpu_ms": statistics.median(_median_step(run, "cpu") for run in runs),
            "first_step_s": statistics.median(run["stamps"][0] - run["start"] for run in runs),
            "peak_rss_mib": max(run["rss"] for run in runs),
            "wall_s": statistics.median(run["seconds"] for run in runs)}


def _overlap(run: dict, other: dict) -> tuple[list[float], list[float]]:
    """The steps of `run` made while `other` was training too (both past their first step): a
    step made while the other side was still importing or already done ran on a quieter
    machine, and would favour one side."""
    low, high = max(run["stamps"][1], other["stamps"][1]), min(run["stamps"][-1], other["stamps"][-1])
    keep = [i for i, t in enumerate(run["stamps"]) if low <= t <= high]
    if len(keep) < 12:  # barely overlapping runs: every step after the first
        keep = list(range(1, len(run["stamps"])))
    return [run["stamps"][i] for i in keep], [run["cpu"][i] for i in keep]


def ratios(each: list[float]) -> dict:
    return {"median": statistics.median(each), "min": min(each), "max": max(each)}


def paired_ratios(platform_runs: list[dict], plain_runs: list[dict]) -> dict:
    """Platform / TRL within each pair of runs made together (step times over the steps both
    made at the same time), then the median and range over pairs."""
    pairs = [(_overlap(p, t), _overlap(t, p)) for p, t in zip(platform_runs, plain_runs)]
    return {"step": ratios([_median_interval(p[0]) / _median_interval(t[0]) for p, t in pairs]),
            "step_cpu": ratios([_median_interval(p[1]) / _median_interval(t[1]) for p, t in pairs]),
            "first_step": ratios([(p["stamps"][0] - p["start"]) / (t["stamps"][0] - t["start"])
                                  for p, t in zip(platform_runs, plain_runs)])}


def pair(commands: list[list[str]], work: Path, index: int, cores: list[int],
          envs: list[dict[str, str] | None] | None = None) -> list[dict]:
    """One repeat: the commands together, on two rotating cores (which side starts on which
    alternates between repeats), or one after the other on a machine with one core."""
    envs = envs or [None] * len(commands)
    if len(cores) >= 2:
        first = index % 2
        return run_together(commands, work, [cores[first], cores[1 - first]], envs)
    return [run_together([command], work, None, [extra])[0] for command, extra in zip(commands, envs)]


def counted(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def ratio_text(r: dict) -> str:
    """A paired ratio: the median over pairs, the lowest and highest pair in brackets."""
    return f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]"


def parameters(model_dir: Path) -> int:
    """The checkpoint's parameter count, from its safetensors header."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118 - no __iter__
