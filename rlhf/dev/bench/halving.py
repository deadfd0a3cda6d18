"""Bench section `halving`: a halving sweep against the full sweep of the same points.

The embedded DPO task over six betas and two seeds at its shipped length, run twice, one after
the other, each with a cache of its own: as a full sweep (every point to its last step), and as
a halving sweep (hydra/sweeper=halving). Measured: the optimizer steps each trained, their wall
and CPU seconds (the commands' own and their children's, from getrusage), the setting the
halving sweep finished, and whether the full sweep's paired analysis (Holm over every pair)
separates that setting from the full sweep's own best.
"""

from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _command(work: Path, environment: dict[str, str], name: str, points: list[str], extra: list[str]) -> dict:
    """Run one sweep command; its wall seconds and the CPU seconds of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    subprocess.run([sys.executable, "-m", "rlhf.train", "-m", *points, *extra, f"hydra.sweep.dir={work / name}",
                    f"cache_dir={work / (name + '_cache')}"], cwd=work, env=environment, capture_output=True,
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.time() - start, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1)}


def _full_steps(sweep: Path) -> int:
    from rlhf.run.rundir import job_dirs, read_metrics

    return sum(int(read_metrics(job)["global_step"]) for job in job_dirs(sweep))


def _separable(full: Path, pick: str, key: str = "method.beta") -> dict:
    """The full sweep's best setting by its paired report, and its verdict on `pick` against it."""
    from rlhf.judge import report

    report.write(full)
    with open(full / "report_comparisons.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    best = next(r for r in rows if r["difference_to_best"] == "best")
    mine = next(r for r in rows if r[key] == pick)
    ranking = sorted(rows, key=lambda r: -float(r["mean"]))  # the report's sense: a win rate, higher is better
    return {"full_best": best[key], "full_best_mean": float(best["mean"]), "pick_mean_in_full": float(mine["mean"]),
            "full_means": {r[key]: float(r["mean"]) for r in ranking},
            "pick_rank_in_full": ranking.index(mine) + 1,
            "pick_is_full_best": mine is best,
            "separable_from_full_best": mine is not best and mine["separable"] == "yes",
            "holm_p": None if mine is best else float(mine["p_holm"])}


def bench(work: Path, environment: dict[str, str], betas: list[float], seeds: list[int], max_steps: int,
          min_steps: int, eta: int) -> dict:
    """The two sweeps and what they decided (the section's record); `environment`: the bench's
    environment for the commands (rlhf.dev.bench.suite.env)."""
    points = [f"method.beta={','.join(map(str, betas))}", f"seed={','.join(map(str, seeds))}",
              f"method.max_steps={max_steps}"]
    full = _command(work, environment, "full", points, [])
    halving = _command(work, environment, "halving", points, ["hydra/sweeper=halving", f"hydra.sweeper.min_steps={min_steps}",
                                                 f"hydra.sweeper.eta={eta}"])
    record = json.loads((work / "halving" / "halving.json").read_text())
    (pick,) = [e["setting"] for r in record["rungs"] if r["last"] for e in r["settings"]]
    beta = pick.split("=", 1)[1]
    return {"betas": betas, "seeds": seeds, "max_steps": max_steps, "min_steps": min_steps, "eta": eta,
            "rungs": [{"step": r["step"], "settings": len(r["settings"]), "seconds": r["seconds"],
                       "scores": {e["setting"]: e["score"] for e in r["settings"]}} for r in record["rungs"]],
            "full": {**full, "steps": _full_steps(work / "full")},
            "halving": {**halving, "steps": record["steps"]["trained"], "pick": beta},
            "steps_share": record["steps"]["trained"] / _full_steps(work / "full"),
            "cpu_share": halving["cpu_s"] / full["cpu_s"], "wall_share": halving["wall_s"] / full["wall_s"],
            **_separable(work / "full", beta)}


def render(figures: dict) -> list[str]:
    """The section's text from its record."""
    rungs = ", ".join(f"step {r['step']}: {r['settings']} settings" for r in figures["rungs"])
    verdict = ("the full sweep's own best" if figures["pick_is_full_best"] else
               f"not separable from the full sweep's best, beta={figures['full_best']} (Holm p="
               f"{figures['holm_p']:.2g})" if not figures["separable_from_full_best"] else
               f"SEPARABLE from (worse than) the full sweep's best, beta={figures['full_best']} "
               f"(Holm p={figures['holm_p']:.2g})")
    return [f"The embedded DPO task over method.beta in {', '.join(map(str, figures['betas']))} and seeds "
            f"{', '.join(map(str, figures['seeds']))}, method.max_steps={figures['max_steps']}: the full sweep, then "
            f"the same points as a halving sweep (`hydra/sweeper=halving hydra.sweeper.min_steps="
            f"{figures['min_steps']} hydra.sweeper.eta={figures['eta']}`; {rungs}), one after the other, each with "
            "a cache of its own, the local launcher.", "",
            "| sweep | optimizer steps | wall s | CPU s |", "|---|---|---|---|",
            f"| full | {figures['full']['steps']} | {figures['full']['wall_s']:.0f} | {figures['full']['cpu_s']:.0f} |",
            f"| halving | {figures['halving']['steps']} | {figures['halving']['wall_s']:.0f} | "
            f"{figures['halving']['cpu_s']:.0f} |", "",
            f"Halving / full: {figures['steps_share']:.2f} of the steps, {figures['cpu_share']:.2f} of the CPU time, "
            f"{figures['wall_share']:.2f} of the wall time. Halving finished beta={figures['halving']['pick']} "
            f"(its full-sweep win rate {figures['pick_mean_in_full']:.3f}, {figures['pick_rank_in_full']} of "
            f"{len(figures['full_means'])} by the full sweep's means): {verdict}; the full sweep's best won "
            f"{figures['full_best_mean']:.3f}.", "",
            "| method.beta | full sweep: win rate at the end | " + " | ".join(
                f"halving: score at step {r['step']}" for r in figures["rungs"]) + " |",
            "|---|---|" + "---|" * len(figures["rungs"]),
            *[f"| {beta} | {mean:.3f} | " + " | ".join(
                (f"{r['scores'][f'method.beta={beta}']:.3f}" if r["scores"].get(f"method.beta={beta}") is not None
                 else "") for r in figures["rungs"]) + " |" for beta, mean in figures["full_means"].items()],
            "", "The wall and CPU times are the commands' own, under the machine's load stated above (load slows "
            "the sweep that meets more of it); the optimizer steps are exact."]
