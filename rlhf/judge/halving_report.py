"""What a halving sweep did, for its report (the sweep's record: halving.json, written by
rlhf.launch.halving): each rung's settings with their scores, which went on and which stopped,
the steps and seconds spent against a full sweep, and a plot of the scores rung by rung
(report_rungs.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf.run import rundir

PLOT = "report_rungs.png"


def read(sweep_dir: Path) -> dict[str, Any] | None:
    """The sweep's halving record (None: it was not a halving sweep)."""
    path = Path(sweep_dir) / rundir.HALVING
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _g(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def section(sweep_dir: Path) -> str:
    """The report.md section of a halving sweep ("" for any other sweep); draws the rung plot.

    Args:
        sweep_dir: the sweep's dir.

    Returns:
        Markdown: a sentence on the schedule and the compute spent, a table of every setting at
        every rung it reached (score, promoted, stopped or finished), and the plot.
    """
    record = read(sweep_dir)
    if record is None:
        return ""
    steps = record.get("steps") or {}
    rungs = record["rungs"]
    lines = ["", "## Halving", ""]
    cpu = steps.get("cpu_seconds")
    spent = (f" Trained {steps['trained']} optimizer steps of the {steps['full_sweep']} a full sweep of every point "
             f"would ({steps['share']:.0%}), in {sum(r.get('seconds', 0) for r in rungs):.0f} s of rungs"
             + (f" and {cpu:.0f} CPU s of the jobs' own processes (a full sweep at the same CPU s per step: about "
                f"{cpu / steps['trained'] * steps['full_sweep']:.0f})" if cpu and steps["trained"] else "") + "."
             + gpu_text(record) if steps.get("share") is not None else " The sweep did not reach its last rung.")
    lines.append(f"Successive halving by `{record['metric']}` ({record['direction']}), eta {record['eta']}: every "
                 f"setting judged at step {rungs[0]['step'] if rungs else 'n/a'}, the best 1/{record['eta']} (the mean "
                 "over a setting's seeds) resumed from their checkpoints to the next rung, up to the last."
                 + spent + (f" Shared by every setting: {', '.join(record['shared'])}." if record.get("shared") else ""))
    final = [e for r in rungs if r["last"] for e in r["settings"]]
    if final:
        lines.append("")
        lines.append(f"Trained to the end (step {rungs[-1]['step']}): {', '.join(e['setting'] for e in final)}. The "
                     "settings stopped earlier were judged after fewer steps, so this sweep does not say how they "
                     "would have ended: the comparison above is among the settings that finished, and a setting "
                     "stopped at a rung lost there by the rung's score alone (no interval, no correction).")
    gpu = bool(record.get("on_gpu"))
    lines += ["", "| rung | step | setting | score | outcome | rung s | rung CPU s |" + (" rung GPU s |" if gpu else ""),
              "|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for number, rung in enumerate(rungs, 1):
        for entry in rung["settings"]:
            outcome = ("finished" if rung["last"] else "promoted" if entry["promoted"] else "stopped")
            lines.append(f"| {number} | {rung['step']} | {entry['setting']} | {_g(entry['score'])} | {outcome} | "
                         f"{rung.get('seconds', '')} | {_g(rung.get('cpu_seconds'))} |"
                         + (f" {_g(rung.get('gpu_seconds'))} |" if gpu else ""))
    if draw(record, Path(sweep_dir) / PLOT):
        lines += ["", f"![score at each rung]({PLOT})"]
    return "\n".join(lines) + "\n"


def gpu_text(record: dict[str, Any]) -> str:
    """The sentence on the sweep's GPU seconds: the jobs' sessions' wall seconds times the GPUs
    each holds (one per training process and its vLLM server's: rlhf.cluster.devices.gpu_seconds),
    and a full sweep's at the same GPU seconds per step; none for a sweep on the CPU.

    Args:
        record: the sweep's halving record.

    Returns:
        The sentence, with a leading space ("" for a record that does not say).
    """
    if "on_gpu" not in record:  # a record from before GPU seconds were recorded
        return ""
    if not record["on_gpu"]:
        return " GPU seconds: none (a CPU run)."
    steps = record.get("steps") or {}
    gpu = steps.get("gpu_seconds")
    if gpu is None:
        return " GPU seconds: unknown (a job left no record of its session)."
    full = f" (a full sweep at the same GPU s per step: about {gpu / steps['trained'] * steps['full_sweep']:.0f})" \
        if steps.get("trained") else ""
    return (f" GPU seconds: {gpu:.0f}{full}, each job's session's wall seconds times the GPUs the job holds (one per "
            "training process, and its vLLM server's): GPU time allocated, not utilisation measured.")


def draw(record: dict[str, Any], path: Path) -> bool:
    """Each setting's score at every rung it reached, a line per setting, its last point hollow
    when it stopped there. Returns whether a plot was written."""
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for rung in record["rungs"]:
        for entry in rung["settings"]:
            if entry["score"] is not None:
                stopped = not rung["last"] and not entry["promoted"]
                series.setdefault(entry["setting"], []).append((rung["step"], entry["score"], stopped))
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in series.items():
        steps, scores = [p[0] for p in points], [p[1] for p in points]
        (line,) = ax.plot(steps, scores, marker="o", label=name)
        if points[-1][2]:
            ax.plot([steps[-1]], [scores[-1]], marker="o", markersize=10, markerfacecolor="white",
                    color=line.get_color())
    ax.set_xlabel("optimizer step (rung)")
    ax.set_ylabel(f"{record['metric']} (mean over seeds)")
    ax.set_title(f"Halving by {record['metric']}, eta {record['eta']}: a hollow point stopped there", fontsize=9)
    ax.set_xticks(sorted({r["step"] for r in record["rungs"]}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
