"""python -m rlhf.report multirun/<sweep dir> [--metric NAME]

One table and one picture for a sweep: `report.csv` and `report.md` list every job's
overrides, status, final metrics and time; `report.png` plots a metric (the method's learning
metric by default) against the swept parameter(s). Written automatically when a multirun
ends, and on demand for any sweep dir (also one still running, or re-run later).

The PNG carries the values its lines were drawn from (read back from the plot's artists) in
its metadata under "rlhf:plotted", so a reader (or a test) can check it against the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from rlhf import rundir
from rlhf.naming import job_number

def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    out = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        if not key.lstrip("+~").startswith("hydra"):
            out[key.lstrip("+~")] = value
    return out


def collect(sweep_dir: Path, metric: str | None = None) -> tuple[list[dict], list[str], str | None]:
    """One row per job; the swept keys (those whose value differs between jobs); the metric."""
    rows = []
    for job in rundir.job_dirs(sweep_dir):
        metrics = rundir.read_metrics(job) if (job / rundir.METRICS).is_file() else {}
        metric = metric or metrics.get("metric")
        error = rundir.failure(job, first_line=True)
        number = job_number(job)
        rows.append({"job": job.name if number is None else str(number), "dir": job.name,
                     "overrides": _overrides(job), "status": rundir.status(job),
                     "metrics": {**metrics.get("train", {}), **metrics.get("eval", {}),
                                 **metrics.get("learning", {})},
                     "seconds": metrics.get("seconds"), "error": error})
    keys = sorted({k for row in rows for k in row["overrides"]})
    swept = [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]
    return rows, swept, metric


def _value(row: dict, metric: str | None) -> float | None:
    value = row["metrics"].get(metric) if metric else None
    return float(value) if isinstance(value, (int, float)) else None


def table(rows: list[dict], swept: list[str], metric: str | None) -> tuple[list[str], list[list[Any]]]:
    shown_metrics = [m for m in (metric, "eval_loss", "train_loss") if m]
    shown_metrics = list(dict.fromkeys(shown_metrics))
    header = ["job", *swept, "status", *shown_metrics, "seconds", "error"]
    body = []
    for row in rows:
        body.append([row["job"], *(row["overrides"].get(k, "") for k in swept), row["status"],
                     *(row["metrics"].get(m, "") for m in shown_metrics), row["seconds"] or "", row["error"]])
    return header, body


def _markdown(header: list[str], body: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot(rows: list[dict], swept: list[str], metric: str | None, path: Path) -> dict[str, Any]:
    """The metric against the first swept key, one line per value of the others; returns what
    was drawn, read back from the plot's lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import PngImagePlugin

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    finished = [r for r in rows if _value(r, metric) is not None]
    x_key = swept[0] if swept else None
    x_values = [r["overrides"].get(x_key, r["job"]) if x_key else r["job"] for r in finished]
    numeric = x_key is not None and all(_number(v) is not None for v in x_values)
    categories = sorted(set(x_values), key=lambda v: (_number(v) is None, _number(v) or 0, v))
    groups: dict[str, list[dict]] = {}
    for row in finished:
        label = ", ".join(f"{k}={row['overrides'].get(k)}" for k in swept[1:]) or (metric or "")
        groups.setdefault(label, []).append(row)
    for label, members in groups.items():
        members.sort(key=lambda r: categories.index(r["overrides"].get(x_key, r["job"]) if x_key else r["job"]))
        xs = [r["overrides"].get(x_key, r["job"]) if x_key else r["job"] for r in members]
        xs = [_number(x) for x in xs] if numeric else [categories.index(x) for x in xs]
        ax.plot(xs, [_value(r, metric) for r in members], marker="o", label=label)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
    ax.set_xlabel(x_key or "job")
    ax.set_ylabel(metric or "metric")
    failed = len(rows) - len(finished)
    ax.set_title(f"{metric} over {len(finished)} finished job(s)" + (f", {failed} without it" if failed else ""))
    if len(groups) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plotted = {"metric": metric, "x": x_key, "lines": [
        {"label": line.get_label(), "x": [float(v) for v in line.get_xdata()],
         "y": [float(v) for v in line.get_ydata()]} for line in ax.lines]}
    if not numeric:
        plotted["categories"] = categories
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    from PIL import Image

    image = Image.open(io.BytesIO(buffer.getvalue()))
    info = PngImagePlugin.PngInfo()
    info.add_text("rlhf:plotted", json.dumps(plotted))
    image.save(path, pnginfo=info)
    return plotted


def write(sweep_dir: str | Path, metric: str | None = None) -> dict[str, Path]:
    sweep_dir = Path(sweep_dir)
    rows, swept, metric = collect(sweep_dir, metric)
    header, body = table(rows, swept, metric)
    paths = {"csv": sweep_dir / "report.csv", "md": sweep_dir / "report.md", "png": sweep_dir / "report.png"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)  # the CSV also names each job's dir (<number>_<overrides>)
        writer.writerow([*header, "dir"])
        writer.writerows([*line, row["dir"]] for line, row in zip(body, rows))
    counts = {s: sum(r["status"] == s for r in rows) for s in rundir.STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    paths["md"].write_text(f"# Sweep {sweep_dir}\n\n{len(rows)} jobs: {summary}. Metric: `{metric}`.\n\n"
                           + _markdown(header, body) + "\n![plot](report.png)\n", encoding="utf-8")
    plot(rows, swept, metric, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun directory (multirun/<date>/<time>)")
    parser.add_argument("--metric", help="metric to plot (default: each method's learning metric)")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir() or not rundir.job_dirs(sweep_dir):
        print(f"error: {sweep_dir} is not a sweep directory (no job directories with a .hydra record in it)",
              file=sys.stderr)
        sys.exit(2)
    for kind, path in write(sweep_dir, args.metric).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
