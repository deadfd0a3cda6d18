"""python -m rlhf.report multirun/<sweep dir> [--metric NAME] [--group COLUMN] [--plan DIFFERENCE]

Tables and one picture for a sweep: `report.csv` and `report.md` list every job's
overrides, status, final metrics and time; `report_settings.csv` and `report.md` list each
setting (the jobs that differ only by `seed`) with n, mean, sample std and the 95% confidence
interval of the mean (Student's t, n-1 degrees of freedom), and report.md names the best
setting and says whether its interval overlaps the runner-up's. A generation figure whose jobs
answered the same prompts with the same decoding seed is judged prompt by prompt instead
(rlhf.judge.paired, rlhf.judge.stats): each setting's interval from seeds and prompts, every
pair of settings compared paired by prompt with Holm's correction (`report_comparisons.csv`),
per-group figures, and `--plan` prints the seeds and prompts a given difference needs. `report.png` plots each
setting's mean and interval of a metric (the method's learning metric by default) against
the swept parameter(s), with every seed's value as a dot. Written automatically when a
multirun ends, and on demand for any sweep dir (also one still running, or re-run later).

The PNG carries the values it was drawn from (read back from the plot's artists) in its
metadata under "rlhf:plotted", so a reader (or a test) can check it against the tables.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from rlhf.run import rundir
from rlhf.run.files import GENERATION_PREFIX as PREFIX
from rlhf.run.naming import job_number
from rlhf.judge import halving_report, paired
from rlhf.judge.stats import LEVEL, summarize

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
    """One row per job; the swept keys (those whose value differs between jobs); the metric:
    the one asked for, else the jobs' objective.metric, else the win rate against the reference
    when the jobs scored their generations, else the method's learning metric."""
    rows = []
    for job in rundir.job_dirs(sweep_dir):
        metrics = rundir.read_metrics(job) if (job / rundir.METRICS).is_file() else {}
        error = rundir.failure(job, first_line=True)
        config = rundir.read_config(job) if (job / rundir.CONFIG).is_file() else {}
        number = job_number(job)
        rows.append({"job": job.name if number is None else str(number), "dir": job.name, "path": job,
                     "overrides": _overrides(job), "status": rundir.status(job),
                     "metrics": rundir.flat_metrics(metrics), "method_metric": metrics.get("metric"),
                     "generation": metrics.get("generation"), "generation_off": metrics.get("generation_off"),
                     "seconds": metrics.get("seconds"), "error": error,
                     "kind": (config.get("method") or {}).get("kind"), "objective": config.get("objective") or {}})
    keys = sorted({k for row in rows for k in row["overrides"]})
    swept = [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]
    return rows, swept, metric or default_metric(rows)


WIN_RATE = PREFIX + "win_rate"
LC = PREFIX + "length_controlled_win_rate"
NOT_SCORES = ("kl", "length", "finished", "empty", "win_rate", "length_controlled_win_rate")


def default_metric(rows: list[dict]) -> str | None:
    for row in rows:
        if row["objective"].get("metric"):
            return row["objective"]["metric"]
    if any(WIN_RATE in row["metrics"] for row in rows):
        return WIN_RATE
    return next((row["method_metric"] for row in rows if row["method_metric"]), None)


def _value(row: dict, metric: str | None) -> float | None:
    value = row["metrics"].get(metric) if metric else None
    return float(value) if isinstance(value, (int, float)) else None


# --- settings: the jobs that differ only by seed, and what their seeds say -----------------

SEED = "seed"
def _order(value: str) -> tuple:
    number = _number(value)
    return (number is None, number or 0.0, str(value))


def settings(rows: list[dict], swept: list[str], metric: str | None) -> tuple[list[str], list[dict]]:
    """The setting keys (the swept keys but seed) and one entry per setting: its key values,
    its jobs, and the stats of the metric over those of its jobs that finished with it."""
    keys = [k for k in swept if k != SEED]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row["overrides"].get(k, "") for k in keys), []).append(row)
    out = []
    for values, members in sorted(groups.items(), key=lambda item: [_order(v) for v in item[0]]):
        finished = [r for r in members if r["status"] == rundir.FINISHED]
        measured = [v for v in (_value(r, metric) for r in finished) if v is not None and math.isfinite(v)]
        notes = []
        stopped = [r for r in members if r["status"] == rundir.STOPPED]
        if stopped:  # a halving sweep stopped them at a rung: judged there, not at the end
            steps = sorted({rung["step"] for r in stopped for rung in rundir.read_rungs(r["path"])})
            notes.append(f"{len(stopped)} of {len(members)} seeds stopped by halving at step {steps[-1] if steps else '?'}")
        if len(finished) + len(stopped) < len(members):
            notes.append(f"{len(finished)} of {len(members)} seeds finished")
        if len(measured) < len(finished):
            notes.append(f"{len(finished) - len(measured)} finished without a finite {metric}")
        if len(measured) == 1:
            notes.append("one seed: no interval")
        out.append({"setting": dict(zip(keys, values)), "jobs": [r["job"] for r in members],
                    "seeds": len(members), "values": measured, **summarize(measured),
                    "note": "; ".join(notes)})
    if two_level(rows, keys, metric, out) is None and metric and metric.startswith(PREFIX):
        low, high = paired.figure_range(metric[len(PREFIX):])
        for s in out:  # seeds-only intervals, cut at the figure's possible range
            if s["ci_low"] is not None and ((low is not None and s["ci_low"] < low)
                                            or (high is not None and s["ci_high"] > high)):
                s["ci_low"] = s["ci_low"] if low is None else max(s["ci_low"], low)
                s["ci_high"] = s["ci_high"] if high is None else min(s["ci_high"], high)
                s["note"] = "; ".join(filter(None, [s["note"], "interval cut at the figure's range"]))
    return keys, out


def two_level(rows: list[dict], keys: list[str], metric: str | None, out: list[dict]) -> dict[str, Any] | None:
    """For a generation figure whose jobs share prompts and decoding: each setting's mean and
    interval over seeds and prompts (rlhf.judge.paired) in place of the seeds-only ones, in
    `out` (marked `two_level`); returns the analysis, or None (the seeds-only figures stay)."""
    if not metric or not metric.startswith(PREFIX) or metric.startswith(PREFIX + "reference/"):
        return None
    if not all(row.get("path") is not None for row in rows):
        return None
    analysis = paired.analyse(rows, keys, metric[len(PREFIX):])
    if analysis["reason"]:
        for s in out:
            s["not_paired"] = analysis["reason"]
        return None
    figures = dict(zip(analysis["settings"], analysis["figures"]))
    for s in out:
        figure = figures.get(tuple(s["setting"][k] for k in keys))
        if figure is not None and s["n"]:
            s.update(mean=figure["mean"], ci_low=figure["ci_low"], ci_high=figure["ci_high"], two_level=figure,
                     prompts=analysis["prompts"])
    return analysis


def greater_is_better(rows: list[dict], metric: str | None) -> bool:
    """The metric's sense: objective.direction when the jobs' config sets it for this metric,
    else the method's (rlhf.methods.lookup(method.kind).greater_is_better) when it is the
    method's learning metric; a loss is always minimised, anything else maximised."""
    from rlhf.config.checks import objective_direction

    if not metric:
        return True
    direction, better = None, None
    for row in rows:
        spec = None
        if row.get("kind"):
            try:
                from rlhf.methods import lookup

                spec = lookup(row["kind"])
            except Exception:  # a method of the user's code, not importable here
                spec = None
        objective = row.get("objective") or {}
        if objective.get("direction") and (objective.get("metric") or (spec and spec.metric)) == metric:
            direction = objective["direction"]
        if spec is not None and spec.metric == metric:
            better = spec.greater_is_better
        if row.get("kind"):
            break
    return objective_direction(metric, direction, better) == "maximize"


def _label(setting: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "all jobs"


def _g(value: float) -> str:
    return f"{value:.4g}"


def method_text(stats: list[dict], level: float = LEVEL) -> str:
    """How the figures were computed, as the report says it."""
    ns = sorted({s["n"] for s in stats if s["n"]})
    if not ns:
        return "no finished job with the metric"
    if ns[-1] == 1:
        return "one seed per setting, so no intervals"
    n = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
    if any(s.get("two_level") for s in stats):
        prompts = max(s.get("prompts") or 0 for s in stats)
        return (f"mean over seeds and prompts and its {level:.0%} CI from both levels ({n} seeds x {prompts} "
                "prompts; two-level mixed model)")
    return f"mean and {level:.0%} CI (Student's t, {n} seeds)"


RULE = "non-overlap of 95% CIs is a conservative rule: a t-test may separate intervals that overlap a little"


def best_setting(stats: list[dict], metric: str | None, greater: bool = True) -> str:
    """One sentence: the best setting by the metric's mean, and whether its 95% interval
    overlaps the runner-up's (or why that cannot be judged)."""
    sense = "higher is better" if greater else "lower is better"
    head = f"By {metric} ({sense}), {method_text(stats)}: "
    measured = [s for s in stats if s["n"]]
    unmeasured = [s for s in stats if not s["n"]]
    missing = (f" ({', '.join(_label(s['setting']) for s in unmeasured)}: no seed finished with {metric},"
               " not compared)") if unmeasured and measured else ""

    def figure(s: dict, ci_word: bool = True) -> str:
        if s["ci_low"] is None:
            return f"{_g(s['mean'])}, one seed: no interval"
        return f"{_g(s['mean'])}{', 95% CI ' if ci_word else ' '}[{_g(s['ci_low'])}, {_g(s['ci_high'])}]"

    if not measured:
        return f"No job finished with {metric or 'a metric'}: no best setting."
    if len(stats) == 1:
        return head + f"one setting ({_label(stats[0]['setting'])}), nothing to compare: {figure(stats[0])}."
    if len(measured) == 1:
        return head + (f"{_label(measured[0]['setting'])} ({figure(measured[0])}) is the only setting "
                       f"with a finished seed{missing}.")
    ranked = sorted(measured, key=lambda s: -s["mean"] if greater else s["mean"])
    best = ranked[0]
    tied = [s for s in ranked if math.isclose(s["mean"], best["mean"], rel_tol=1e-9, abs_tol=1e-12)]
    if len(tied) == len(ranked):
        return head + f"all {len(ranked)} settings have the same mean ({_g(best['mean'])}): none is better{missing}."
    if len(tied) > 1:
        return head + (" and ".join(_label(s["setting"]) for s in tied)
                       + f" tie for best ({_g(best['mean'])}): none of them is better than the others{missing}.")
    runner = ranked[1]
    named = f"{_label(best['setting'])} is best ({figure(best)})"
    if best["ci_low"] is None or runner["ci_low"] is None:
        why = ("without repeated seeds" if best["n"] == 1 and runner["n"] == 1
               else "with a single finished seed on one side")
        return head + (f"{named}, ahead of {_label(runner['setting'])} ({figure(runner, False)}), but {why} "
                       f"the difference cannot be judged{missing}.")
    overlap = best["ci_low"] <= runner["ci_high"] and runner["ci_low"] <= best["ci_high"]
    if overlap:
        return head + (f"{named}; not separable from {_label(runner['setting'])} ({figure(runner, False)}): "
                       f"the intervals overlap ({RULE}){missing}.")
    return head + (f"{named} and separable from the runner-up {_label(runner['setting'])} "
                   f"({figure(runner, False)}): the intervals do not overlap ({RULE}){missing}.")


HOLM = "paired, Holm-adjusted, 95%"
COMPARISONS = (
    "Each setting against the one with the best mean of `{metric}`: the difference of the means (setting less "
    "best), estimated over prompts and seeds together and paired by prompt (every job answered the same "
    "prompts with the same decoding seed), its 95% CI and p-value from a two-level mixed model (seed and "
    "residual variance pooled over the sweep's settings by the method of moments, the prompt-by-setting "
    "variance from the pair; Student's t with Satterthwaite degrees of freedom), and the p-value adjusted by "
    "Holm's method over the family of every pair of settings, so that the chance of any false separation is "
    "at most 5%. separable: the Holm-adjusted p is at most 0.05. A setting's own CI uses both levels too (a "
    "Wilson score interval at its effective sample size for a figure in [0, 1]). Any two settings: "
    "report_pairs.csv holds every pair.")


def _ranked(stats: list[dict], analysis: dict[str, Any], keys: list[str], greater: bool) -> list[tuple[int, dict]]:
    """The measured settings with their index in the analysis, best mean first."""
    index = {values: i for i, values in enumerate(analysis["settings"])}
    found = [(index[tuple(s["setting"][k] for k in keys)], s) for s in stats
             if s["n"] and tuple(s["setting"][k] for k in keys) in index]
    return sorted(found, key=lambda item: -item[1]["mean"] if greater else item[1]["mean"])


def paired_sentence(stats: list[dict], analysis: dict[str, Any], keys: list[str], metric: str,
                    greater: bool = True) -> str | None:
    """The best-setting sentence of the paired analysis: the setting with the best mean, and the
    settings it is better than and those it cannot be separated from, each pair's difference
    tested prompt by prompt and the family of every pair Holm-corrected (None when there is no
    pair to compare: then `best_setting` says why)."""
    ranked = _ranked(stats, analysis, keys, greater)
    if len(ranked) < 2:
        return None
    sense = "higher is better" if greater else "lower is better"
    pairs = len(analysis["pairs"])
    head = (f"By {metric} ({sense}), {method_text(stats)}; every pair compared {paired.stats.PAIRED} "
            f"(Holm-adjusted over the {pairs} pair{'s' if pairs > 1 else ''}, 95% family-wise): ")
    best_index, best = ranked[0]
    if all(math.isclose(s["mean"], best["mean"], rel_tol=1e-9, abs_tol=1e-12) for _, s in ranked):
        return head + f"all {len(ranked)} settings have the same mean ({_g(best['mean'])}): none is better."
    named = f"{_label(best['setting'])} has the best mean ({_g(best['mean'])}, 95% CI [{_g(best['ci_low'])}, " \
            f"{_g(best['ci_high'])}])"
    better, level = [], []
    for index, s in ranked[1:]:
        entry = paired.stats.between(analysis["pairs"], best_index, index)
        text = (f"{_label(s['setting'])} (difference {_g(entry['difference'])} [{_g(entry['ci_low'])}, "
                f"{_g(entry['ci_high'])}], Holm p={entry['p_holm']:.2g})")
        (better if entry["separable"] else level).append(text)
    if not level:
        return head + f"{named} and is better than every other setting ({HOLM}): " + "; ".join(better) + "."
    text = head + f"{named} but cannot be separated from " + "; ".join(level) + f" ({HOLM})"
    if better:
        text += "; it is better than " + "; ".join(better)
    return text + "."


def _best(stats: list[dict], greater: bool = True) -> dict | None:
    measured = [s for s in stats if s["n"]]
    if len(measured) < 2:
        return None
    ranked = sorted(measured, key=lambda s: -s["mean"] if greater else s["mean"])
    return None if math.isclose(ranked[0]["mean"], ranked[1]["mean"], rel_tol=1e-9, abs_tol=1e-12) else ranked[0]


def disagreements(rows: list[dict], swept: list[str], metric: str | None) -> list[str]:
    """Lines for what the average hides: the raw and the length-controlled win rate naming
    different best settings ("length may be driving the win rate"), and scorers that rank the
    settings differently from the sweep's metric."""
    lines = []
    names = generation_names(rows)
    best_of = {name: _best(settings(rows, swept, name)[1]) for name in names
               if name == WIN_RATE or name == LC or (name not in (PREFIX + n for n in NOT_SCORES))}
    raw, controlled = best_of.get(WIN_RATE), best_of.get(LC)
    if raw and controlled and raw["setting"] != controlled["setting"]:
        lines.append(f"The raw win rate names {_label(raw['setting'])} best ({_g(raw['mean'])}), the length-controlled "
                     f"win rate {_label(controlled['setting'])} ({_g(controlled['mean'])}): length may be driving the "
                     "win rate.")
    scorers = {n: b for n, b in best_of.items() if n not in (WIN_RATE, LC) and b is not None}
    if metric in best_of and best_of[metric] is not None:
        differ = {n: b for n, b in scorers.items() if n != metric and b["setting"] != best_of[metric]["setting"]}
        if differ:
            lines.append(f"The scorers rank the settings differently: by {metric} {_label(best_of[metric]['setting'])} "
                         "is best, by " + "; by ".join(f"{n} {_label(b['setting'])}" for n, b in differ.items()) + ".")
    return lines


GROUP = "category"


def grouped_by(rows: list[dict]) -> str:
    """The column the jobs grouped their prompts by (their evaluate.group_by, in the generation
    block), else `category`."""
    for row in rows:
        column = ((row["generation"] or {}).get("groups") or {}).get("column")
        if column:
            return column
    return GROUP


def by_group(rows: list[dict], swept: list[str], metric: str | None, greater: bool = True,
             column: str | None = None) -> tuple[str, list[str]]:
    """What the average hides, per value of a grouping column of the prompts (`column`, else the
    jobs' evaluate.group_by, else `category`): every per-prompt figure (the metric first, the
    share of empty completions last) per group and setting (two-level means and intervals on
    the group's prompts), and lines for a
    group whose every completion of a setting is empty, and for a group in which the setting
    with the best average is worse than another one (paired, Holm over every group's comparison
    of the best with the others). Returns the report.md section ("" without groups) and the
    lines. Long because the table and both checks walk the same per-group analyses."""
    if not metric or not metric.startswith(PREFIX):
        return "", []
    column = column or grouped_by(rows)
    prompt_groups = paired.groups(rows, column)
    if not prompt_groups:
        return "", []
    keys = [k for k in swept if k != SEED]
    name = metric[len(PREFIX):]
    data, _ = paired.shared(rows)
    available = set(next(iter(data.values()))["figures"]) if data else set()
    order = ["win_rate", *sorted(available - set(paired.RANGES)), "kl", "length", "finished", paired.EMPTY]
    figures = list(dict.fromkeys([name, *(f for f in order if f in available)]))
    overall = paired.analyse(rows, keys, name)
    if overall["reason"]:
        return "", []
    index = {values: i for i, values in enumerate(overall["settings"])}
    means = [f["mean"] for f in overall["figures"]]
    best = max(range(len(means)), key=lambda i: means[i] if greater else -means[i])
    header = [column, *keys, *figures]
    body, lines, family = [], [], []
    for group in sorted(prompt_groups, key=_order):
        analyses = {f: paired.analyse(rows, keys, f, prompts=prompt_groups[group]) for f in figures}
        first = analyses[name]
        if first["reason"]:
            continue
        for values in first["settings"]:
            cells = []
            for f in figures:
                a = analyses[f]
                figure = a["figures"][a["settings"].index(values)] if not a["reason"] else None
                cells.append(f"{_g(figure['mean'])} [{_g(figure['ci_low'])}, {_g(figure['ci_high'])}]"
                             if figure else "")
            body.append([group, *values, *cells])
        empty = analyses.get(paired.EMPTY)
        if empty and not empty["reason"]:
            for values, figure in zip(empty["settings"], empty["figures"]):
                if figure["mean"] >= 1.0:
                    lines.append(f"In {column}={group}, every completion of {_label(dict(zip(keys, values)))} is "
                                 "empty (its average hides it).")
        for values in first["settings"]:
            k = first["settings"].index(values)
            if index.get(values) is None or index[values] == best:
                continue
            b = first["settings"].index(overall["settings"][best]) if overall["settings"][best] in first["settings"] \
                else None
            if b is None:
                continue
            entry = paired.stats.between(first["pairs"], b, k)
            family.append((group, values, entry))
    if family:
        reject, adjusted = paired.stats.holm([e["p"] for _, _, e in family])
        for (group, values, entry), r, p in zip(family, reject, adjusted):
            worse = entry["difference"] < 0 if greater else entry["difference"] > 0
            if r and worse:
                lines.append(f"In {column}={group}, {_label(dict(zip(keys, overall['settings'][best])))} (best on "
                             f"average) is worse than {_label(dict(zip(keys, values)))}: difference "
                             f"{_g(entry['difference'])} [{_g(entry['ci_low'])}, {_g(entry['ci_high'])}] (paired, "
                             f"Holm-adjusted over the {len(family)} comparisons of the best setting within groups, "
                             f"p={p:.2g}); the average hides it.")
    text = (f"\n## By {column}\n\nEach figure per value of the prompts' `{column}` column and setting: the mean over "
            "the group's prompts and the seeds, with its 95% CI from both levels; empty: the share of empty "
            "completions.\n\n" + _markdown(header, body) + ("\n" + "\n".join(f"- {x}" for x in lines) + "\n"
                                                           if lines else ""))
    return text, lines


def comparison_table(stats: list[dict], analysis: dict[str, Any], keys: list[str],
                     greater: bool = True) -> tuple[list[str], list[list[Any]]]:
    """Each setting against the best one: its mean and interval, the paired difference to the
    best with its interval, p and Holm-adjusted p (the family of every pair), and whether it is
    separable from the best."""
    ranked = _ranked(stats, analysis, keys, greater)
    header = [*keys, "mean", "ci_low", "ci_high", "difference_to_best", "diff_ci_low", "diff_ci_high", "p",
              "p_holm", "separable"]
    body = []
    best_index = ranked[0][0] if ranked else None
    for index, s in ranked:
        row = [*(s["setting"][k] for k in keys), s["mean"], s["ci_low"], s["ci_high"]]
        if index == best_index:
            row += ["best", "", "", "", "", ""]
        else:
            e = paired.stats.between(analysis["pairs"], index, best_index)
            row += [e["difference"], e["ci_low"], e["ci_high"], e["p"], e["p_holm"],
                    "yes" if e["separable"] else "no"]
        body.append(row)
    return header, body


def pairs_table(analysis: dict[str, Any], keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Every pair of settings (a less b): the paired difference, its interval, p, the Holm-adjusted
    p over the family of every pair, and whether it is separable; report_pairs.csv."""
    header = [*(f"a:{k}" for k in keys), *(f"b:{k}" for k in keys), "difference", "ci_low", "ci_high", "p",
              "p_holm", "separable"]
    body = []
    for (i, k), e in analysis["pairs"].items():
        body.append([*analysis["settings"][i], *analysis["settings"][k], e["difference"], e["ci_low"], e["ci_high"],
                     e["p"], e["p_holm"], "yes" if e["separable"] else "no"])
    return header, body


def settings_table(keys: list[str], stats: list[dict]) -> tuple[list[str], list[list[Any]]]:
    header = [*keys, "n", "seeds", "mean", "std", "ci_low", "ci_high", "note"]
    body = [[*(s["setting"][k] for k in keys), s["n"], s["seeds"],
             *("" if s[f] is None else s[f] for f in ("mean", "std", "ci_low", "ci_high")), s["note"]]
            for s in stats]
    return header, body


def _learning_value(row: dict) -> Any:
    """A job's value of its own method's learning metric ("" when it has none)."""
    return row["metrics"].get(row["method_metric"], "") if row["method_metric"] else ""


def table(rows: list[dict], swept: list[str], metric: str | None) -> tuple[list[str], list[list[Any]]]:
    """One line per job. When a job's method learns by another metric than the sweep's (a sweep
    over methods, or one judged by its generations), each job's own learning metric too."""
    shown_metrics = [m for m in (metric, "eval_loss", "train_loss") if m]
    shown_metrics = list(dict.fromkeys(shown_metrics))
    learning = any(row["method_metric"] and row["method_metric"] != metric for row in rows)
    header = ["job", *swept, "status", *shown_metrics, *(["learning_metric", "learning_value"] if learning else []),
              "seconds", "error"]
    body = []
    for row in rows:
        body.append([row["job"], *(row["overrides"].get(k, "") for k in swept), row["status"],
                     *(row["metrics"].get(m, "") for m in shown_metrics),
                     *([row["method_metric"] or "", _learning_value(row)] if learning else []),
                     row["seconds"] or "", row["error"]])
    return header, body


def learning_table(rows: list[dict], swept: list[str]) -> tuple[list[str], list[list[Any]]] | None:
    """Per setting, its method's own learning metric over its seeds (mean, 95% CI), for a sweep
    whose methods learn by different metrics (None otherwise): each is judged on its own
    figure, which the others do not have."""
    if len({row["method_metric"] for row in rows if row["method_metric"]}) < 2:
        return None
    keys = [k for k in swept if k != SEED]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row["overrides"].get(k, "") for k in keys), []).append(row)
    header = [*keys, "learning metric", "n", "mean", "ci_low", "ci_high"]
    body = []
    for values, members in sorted(groups.items(), key=lambda item: [_order(v) for v in item[0]]):
        names = sorted({r["method_metric"] for r in members if r["method_metric"]})
        measured = [float(v) for v in (_learning_value(r) for r in members if r["status"] == rundir.FINISHED)
                    if isinstance(v, (int, float)) and math.isfinite(v)]
        figures = summarize(measured)
        body.append([*values, ", ".join(names), figures["n"],
                     *("" if figures[f] is None else figures[f] for f in ("mean", "ci_low", "ci_high"))])
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


def plot(rows: list[dict], swept: list[str], metric: str | None, path: Path,
         greater: bool | None = None) -> dict[str, Any]:
    """Each setting's mean of the metric, with its 95% CI as an error bar and each seed's value
    as a dot, against the first setting key, one line per value of the others; returns what was
    drawn, read back from the plot's artists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    keys, stats = settings(rows, swept, metric)
    measured = [s for s in stats if s["n"]]
    x_key = keys[0] if keys else None

    def x_of(s: dict) -> str:
        return s["setting"][x_key] if x_key else "all jobs"

    numeric = x_key is not None and all(_number(x_of(s)) is not None for s in measured)
    categories = sorted({x_of(s) for s in measured}, key=_order)

    def position(value: str) -> float:
        return _number(value) if numeric else categories.index(value)

    groups: dict[str, list[dict]] = {}
    for s in measured:
        label = ", ".join(f"{k}={s['setting'][k]}" for k in keys[1:]) or (metric or "")
        groups.setdefault(label, []).append(s)
    drawn = [draw_group(ax, label, members, x_of, position) for label, members in groups.items()]
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
    chance = None
    if metric in (WIN_RATE, LC):
        chance = ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="0.5: as good as the reference")
    ax.set_xlabel(x_key or "setting")
    sense = "" if greater is None else (" (higher is better)" if greater else " (lower is better)")
    ax.set_ylabel((metric or "metric") + sense)
    with_metric = sum(s["n"] for s in stats)
    import textwrap

    ax.set_title(textwrap.fill(f"{metric}: {method_text(stats)}; dots: seeds", 85)
                 + f"\n{with_metric} of {len(rows)} job(s) finished with it", fontsize=9)
    if len(groups) > 1 or chance is not None:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plotted = {"metric": metric, "x": x_key, "lines": [read_back(*artists) for artists in drawn],
               "horizontal_line": float(chance.get_ydata()[0]) if chance is not None else None}
    if not numeric:
        plotted["categories"] = categories
    _save_png(fig, path, plotted)
    return plotted


def draw_group(ax: Any, label: str, members: list[dict], x_of: Any, position: Any) -> tuple[Any, Any, Any]:
    """One line of settings: their means joined, each one's interval as an error bar, each seed's
    value as a dot; returns the three artists."""
    members.sort(key=lambda s: _order(x_of(s)))
    xs = [position(x_of(s)) for s in members]
    (line,) = ax.plot(xs, [s["mean"] for s in members], marker="o", label=label)
    with_ci = [(x, s) for x, s in zip(xs, members) if s["ci_low"] is not None]
    bars = ax.errorbar([x for x, _ in with_ci], [s["mean"] for _, s in with_ci],
                       yerr=[[s["mean"] - s["ci_low"] for _, s in with_ci],
                             [s["ci_high"] - s["mean"] for _, s in with_ci]],
                       fmt="none", ecolor=line.get_color(), capsize=4) if with_ci else None
    span = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
    setting_x = [x for x, s in zip(xs, members) for _ in s["values"]]
    (seeds,) = ax.plot([x + offset for x, s in zip(xs, members) for offset in jitter(len(s["values"]), span)],
                       [v for s in members for v in s["values"]], linestyle="none", marker=".",
                       color=line.get_color(), alpha=0.45, label="_nolegend_")
    return line, bars, seeds, setting_x


JITTER = 0.012  # of the x axis' span, between neighbouring seeds' dots


def jitter(count: int, span: float) -> list[float]:
    """Offsets on the x axis for a setting's `count` seed dots, spread evenly around 0 so that
    equal values stay apart (deterministic: the same report draws the same plot)."""
    step = JITTER * (span or 1.0)
    return [(k - (count - 1) / 2) * step for k in range(count)]


def read_back(line: Any, bars: Any, seeds: Any, setting_x: list[float] | None = None) -> dict[str, Any]:
    """What one line of the plot shows, read from its artists: the means, the error bars' extents
    and the seeds' dots (drawn jittered: `setting_x` is the x of each dot's setting)."""
    segments = bars.lines[2][0].get_segments() if bars is not None else []
    return {"label": line.get_label(), "x": [float(v) for v in line.get_xdata()],
            "y": [float(v) for v in line.get_ydata()],
            "errorbars": [{"x": float(seg[0][0]), "low": float(seg[0][1]), "high": float(seg[1][1])}
                          for seg in segments],
            "seeds": {"x": [float(v) for v in seeds.get_xdata()], "y": [float(v) for v in seeds.get_ydata()],
                      "setting_x": [float(v) for v in (setting_x or [])]}}


# --- what the policies generated -----------------------------------------------------------


def generation_names(rows: list[dict]) -> list[str]:
    """The policy-side generation metrics the jobs have: win rate (raw, length-controlled),
    scorers, KL, length, the shares of finished and of empty completions."""
    present = [m for row in rows for m in row["metrics"] if m.startswith(PREFIX)
               and not m.startswith(PREFIX + "reference/")]
    first = [m for m in (WIN_RATE, LC) if m in present]
    last = [PREFIX + n for n in ("kl", "length", "finished", "empty") if PREFIX + n in present]
    return list(dict.fromkeys([*first, *(m for m in present if m not in first and m not in last), *last]))


def generation_off_text(rows: list[dict]) -> str:
    """A line for the jobs whose generation eval stage did not run, with why (metrics.json
    `generation_off`): so a sweep judged only by its training metrics says so."""
    off = [row for row in rows if row.get("generation_off")]
    if not off:
        return ""
    reasons = "; ".join(f"{why} (job{'s' if n > 1 else ''} {', '.join(jobs)})" for why, n, jobs in (
        (why, len(js), js) for why, js in _by_reason(off).items()))
    heading = "" if any(row.get("generation") for row in rows) else "\n## Generations\n"
    return (f"{heading}\nThe generation eval stage did not run in {len(off)} of {len(rows)} jobs: {reasons}. Their "
            "settings are judged by their training metrics alone.\n")


def _by_reason(rows: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["generation_off"], []).append(row["job"])
    return out


def reward_metric(rows: list[dict]) -> str | None:
    """The reward a frontier plots: the win rate's judge, else the first scorer."""
    for row in rows:
        block = row.get("generation") or {}
        judge = (block.get("win_rate") or {}).get("judge")
        scorers = [s["name"] for s in block.get("scorers") or []]
        if judge or scorers:
            return PREFIX + (judge or scorers[0])
    return None


def _cell(s: dict) -> str:
    if not s["n"]:
        return ""
    if s["ci_low"] is None:
        return f"{_g(s['mean'])} (one seed)"
    return f"{_g(s['mean'])} [{_g(s['ci_low'])}, {_g(s['ci_high'])}]"


def generation_table(rows: list[dict], swept: list[str]) -> tuple[list[str], list[list[Any]]] | None:
    """Per setting, each generation metric's mean over seeds with its 95% interval."""
    names = generation_names(rows)
    if not names:
        return None
    columns = {name: settings(rows, swept, name) for name in names}
    keys, first = columns[names[0]]
    body = [[*(s["setting"][k] for k in keys), *(_cell(columns[name][1][i]) for name in names)]
            for i, s in enumerate(first)]
    return [*keys, *(n[len(PREFIX):] for n in names)], body


def separability(judged: dict[str, Any]) -> dict[str, str]:
    """Per setting label, how it stands against the best setting by the sweep's metric in the
    paired analysis: "best", "separable" or "not separable" ({} without a paired analysis)."""
    analysis = judged.get("analysis")
    if not analysis:
        return {}
    ranked = _ranked(judged["stats"], analysis, judged["keys"], judged["greater"])
    if len(ranked) < 2:
        return {}
    best_index, best = ranked[0]
    out = {_label(best["setting"]): "best"}
    for index, s in ranked[1:]:
        entry = paired.stats.between(analysis["pairs"], index, best_index)
        out[_label(s["setting"])] = "separable" if entry["separable"] else "not separable"
    return out


def frontier(rows: list[dict], swept: list[str], path: Path, marks: dict[str, str] | None = None,
             metric: str | None = None) -> dict[str, Any] | None:
    """The RLHF frontier: each setting's reward against its KL from the reference (means over
    seeds and prompts, 95% intervals as error bars on both axes, seeds as dots, the reference at
    KL 0); with `marks` (`separability`), the best setting by `metric` drawn as a star, those
    separable from it filled and those not hollow. Returns what was drawn; None when the jobs
    have no KL or reward."""
    reward, kl = reward_metric(rows), PREFIX + "kl"
    if reward is None or not any(kl in row["metrics"] for row in rows):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, xs = settings(rows, swept, kl)
    _, ys = settings(rows, swept, reward)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    points = []
    for sx, sy in zip(xs, ys):
        if not (sx["n"] and sy["n"]):
            continue
        label = _label(sx["setting"])
        xerr = [[sx["mean"] - sx["ci_low"]], [sx["ci_high"] - sx["mean"]]] if sx["ci_low"] is not None else None
        yerr = [[sy["mean"] - sy["ci_low"]], [sy["ci_high"] - sy["mean"]]] if sy["ci_low"] is not None else None
        mark = (marks or {}).get(label)
        style = {"best": {"fmt": "*", "markersize": 13}, "not separable": {"fmt": "o", "markerfacecolor": "white"}}
        suffix = {"best": f" (best by {metric})", "separable": " (separable from the best)",
                  "not separable": " (not separable from the best)"}.get(mark, "")
        bars = ax.errorbar([sx["mean"]], [sy["mean"]], xerr=xerr, yerr=yerr, capsize=4, label=label + suffix,
                           **style.get(mark, {"fmt": "o"}))
        jobs = [r for r in rows if r["job"] in sx["jobs"] and kl in r["metrics"] and reward in r["metrics"]]
        ax.plot([r["metrics"][kl] for r in jobs], [r["metrics"][reward] for r in jobs], linestyle="none",
                marker=".", alpha=0.45, color=bars.lines[0].get_color(), label="_nolegend_")
        # Keyword keys: the plotted axis "reward" is not the method of that name (tests/test_architecture.py).
        points.append(dict(label=label, mark=mark, kl=sx["mean"], reward=sy["mean"], kl_ci=[sx["ci_low"], sx["ci_high"]],
                           reward_ci=[sy["ci_low"], sy["ci_high"]],
                           seeds=[[r["metrics"][kl], r["metrics"][reward]] for r in jobs]))
    baseline = [r["metrics"][PREFIX + "reference/" + reward[len(PREFIX):]] for r in rows
                if PREFIX + "reference/" + reward[len(PREFIX):] in r["metrics"]]
    if baseline:
        ax.plot([0.0], [math.fsum(baseline) / len(baseline)], marker="X", markersize=9, color="black",
                linestyle="none", label="reference (starting model)")
    ax.set_xlabel("KL(policy || reference), nats per completion (k1 estimate)")
    ax.set_ylabel(f"{reward} (higher is better)")
    marked = (f"; star: best by {metric}, filled: separable from it, hollow: not (paired, Holm)"
              if marks else "")
    ax.set_title(f"Reward against KL: mean and 95% CI per setting; dots: seeds\n"
                 f"{len(points)} setting(s){marked}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plotted = dict(reward=reward, kl=kl, points=points,
                   reference=math.fsum(baseline) / len(baseline) if baseline else None)
    _save_png(fig, path, plotted)
    return plotted


def _save_png(fig: Any, path: Path, plotted: dict[str, Any]) -> None:
    """The figure as a PNG that carries what it drew under "rlhf:plotted"."""
    import matplotlib.pyplot as plt
    from PIL import Image, PngImagePlugin

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    info = PngImagePlugin.PngInfo()
    info.add_text("rlhf:plotted", json.dumps(plotted))
    image.save(path, pnginfo=info)


EMPTY_TEXT = "(empty completion)"


def _short(value: Any, limit: int = 120) -> str:
    if isinstance(value, list):  # chat messages: the last user turn says what was asked
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else json.dumps(value)
    text = " ".join(str(value).split())
    if not text:
        return EMPTY_TEXT
    return text if len(text) <= limit else text[:limit - 1] + "…"


def side_by_side(rows: list[dict], swept: list[str], prompts: int = 3) -> str:
    """A few prompts with the reference's completion and each setting's (its first finished
    seed's), with the judge's score: what the numbers are made of."""
    keys = [k for k in swept if k != SEED]
    chosen: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: _order(r["job"])):
        label = _label({k: row["overrides"].get(k, "") for k in keys})
        path = Path(row["path"]) / "completions.jsonl"
        if label in chosen or row["status"] != rundir.FINISHED or not path.is_file():
            continue
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        chosen[label] = [line for line in lines if line.get("sample", 0) == 0][:prompts]
    if not chosen:
        return ""
    judge = (reward_metric(rows) or PREFIX)[len(PREFIX):]
    first = next(iter(chosen.values()))

    def shown(text: str, scores: dict) -> str:
        score = scores.get(judge)
        return f"{_short(text)}" + (f" ({judge} {_g(score)})" if isinstance(score, (int, float)) else "")

    header = ["prompt", "reference", *chosen]
    body = []
    for i, line in enumerate(first):
        cells = [_short(line["prompt"]), shown(line.get("reference_completion", ""), line.get("reference_scores", {}))]
        for label, lines in chosen.items():
            cells.append(shown(lines[i]["completion"], lines[i].get("scores", {})) if i < len(lines) else "")
        body.append(cells)
    seeds = "its first seed" if SEED in swept else "its job"
    return (f"The first {len(body)} prompts, with the reference policy's completion and each setting's ({seeds}); "
            f"in brackets the judge's score.\n\n" + _markdown(header, body))


def _judged(sweep_dir: Path, metric: str | None, group: str | None = None) -> dict[str, Any]:
    rows, swept, metric = collect(sweep_dir, metric)
    keys, stats = settings(rows, swept, metric)
    greater = greater_is_better(rows, metric)
    analysis = two_level(rows, keys, metric, [])
    sentence = paired_sentence(stats, analysis, keys, metric, greater) if analysis else None
    if sentence is None:
        sentence = best_setting(stats, metric, greater)
        reason = next((s["not_paired"] for s in stats if s.get("not_paired")), None)
        if reason and any(s["n"] for s in stats) and len(stats) > 1:
            sentence += f" (Not compared prompt by prompt: {reason}; the seeds-only rule above instead.)"
    groups_text, group_lines = by_group(rows, swept, metric, greater, group)
    if metric and metric.startswith(PREFIX):
        sentence = " ".join([sentence, *disagreements(rows, swept, metric), *group_lines])
    return {"rows": rows, "swept": swept, "metric": metric, "keys": keys, "stats": stats, "greater": greater,
            "sentence": sentence, "analysis": analysis, "groups": groups_text}


def verdict(sweep_dir: str | Path, metric: str | None = None, group: str | None = None) -> str:
    """The best-setting sentence of a sweep dir's report."""
    return _judged(Path(sweep_dir), metric, group)["sentence"]


def write(sweep_dir: str | Path, metric: str | None = None, group: str | None = None) -> dict[str, Path]:
    """The report of a sweep dir: report.md, report.csv, report_settings.csv, the comparisons
    (report_comparisons.csv, when its jobs can be compared prompt by prompt) and the plots;
    `group` names the prompts' grouping column (default: `category`). Returns the paths.
    Long because it is the one place that assembles every table, section and plot of report.md."""
    sweep_dir = Path(sweep_dir)
    judged = _judged(sweep_dir, metric, group)
    rows, swept, metric, stats = judged["rows"], judged["swept"], judged["metric"], judged["stats"]
    header, body = table(rows, swept, metric)
    s_header, s_body = settings_table(judged["keys"], stats)
    paths = {"csv": sweep_dir / "report.csv", "settings": sweep_dir / "report_settings.csv",
             "md": sweep_dir / "report.md", "png": sweep_dir / "report.png"}
    comparisons = ""
    if judged["analysis"] and len(judged["analysis"]["settings"]) > 1:
        c_header, c_body = comparison_table(stats, judged["analysis"], judged["keys"], judged["greater"])
        paths["comparisons"] = sweep_dir / "report_comparisons.csv"
        paths["pairs"] = sweep_dir / "report_pairs.csv"
        for path, (head, lines) in ((paths["comparisons"], (c_header, c_body)),
                                    (paths["pairs"], pairs_table(judged["analysis"], judged["keys"]))):
            with open(path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([head, *lines])
        comparisons = ("\n## Paired comparisons\n\n" + COMPARISONS.format(metric=metric) + "\n\n"
                       + _markdown(c_header, c_body) + "\n" + smallest_text(judged["analysis"], metric) + "\n")
    else:
        for name in ("report_comparisons.csv", "report_pairs.csv"):
            if (sweep_dir / name).exists():
                (sweep_dir / name).unlink()
    # The jobs' CSV also names each job's dir (<number>_<overrides>).
    jobs_table = ([*header, "dir"], [[*line, row["dir"]] for line, row in zip(body, rows)])
    for path, (head, lines) in ((paths["csv"], jobs_table), (paths["settings"], (s_header, s_body))):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(head)
            writer.writerows(lines)
    counts = {s: sum(r["status"] == s for r in rows) for s in rundir.STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    sense = (" (higher is better)" if judged["greater"] else " (lower is better)") if metric else ""
    measured = any(s["n"] for s in stats)
    generation = generation_table(rows, swept)
    drawn = (frontier(rows, swept, sweep_dir / "report_frontier.png", separability(judged), metric)
             if generation else None)
    if drawn is not None:
        paths["frontier"] = sweep_dir / "report_frontier.png"
    elif (sweep_dir / "report_frontier.png").exists():
        (sweep_dir / "report_frontier.png").unlink()  # from an earlier report of jobs that since changed
    sections = ""
    learning = learning_table(rows, swept)
    if learning:
        sections += ("\n## Learning metrics\n\nThe methods of this sweep learn by different metrics: each setting's "
                     "own method's learning metric (metrics.json `metric`), the mean over its seeds and, with two or "
                     "more seeds, the 95% CI of that mean (Student's t). Figures of different metrics are not "
                     "compared.\n\n" + _markdown(*learning))
    if generation:
        g_header, g_body = generation
        sections += ("\n## Generations\n\nWhat each setting's policies generated for the evaluate prompts "
                     "(rlhf.evaluate), per setting: the mean over its seeds and prompts with its 95% CI from both "
                     "levels when the jobs can be compared prompt by prompt (a figure in [0, 1]: Wilson score "
                     "interval at the effective sample size), else the mean over seeds with Student's t over them, "
                     "cut at the figure's range. win_rate: against the reference policy's completions, ties "
                     "counted half; length_controlled_win_rate: the win rate at no length difference (AlpacaEval 2's "
                     "logistic model); kl: k1 estimate of KL(policy || reference) per completion; length: tokens per "
                     "completion; finished, empty: the shares of completions that ended with an end-of-sequence "
                     "token and that are empty.\n\n" + _markdown(g_header, g_body))
        if drawn is not None:
            sections += "\n![reward against KL](report_frontier.png)\n"
        examples = side_by_side(rows, swept)
        if examples:
            sections += "\n### What was generated\n\n" + examples
    sections += generation_off_text(rows)
    sections += halving_report.section(sweep_dir)
    if (sweep_dir / halving_report.PLOT).is_file():
        paths["rungs"] = sweep_dir / halving_report.PLOT
    paths["md"].write_text(
        f"# Sweep {sweep_dir}\n\n{len(rows)} jobs: {summary}. Metric: `{metric}`{sense}.\n\n"
        f"## Settings\n\n{judged['sentence']}\n\n"
        f"Per setting (the jobs that differ only by `{SEED}`): `{metric}` over the seeds that finished with it, "
        + (f"{method_text(stats)}; std is the sample standard deviation (n-1).\n\n" if measured else
           "and none did.\n\n")
        + _markdown(s_header, s_body) + comparisons + judged["groups"] + sections + "\n## Jobs\n\n" + _markdown(header, body)
        + "\n![plot](report.png)\n",
        encoding="utf-8")
    plot(rows, swept, metric, paths["png"], judged["greater"])
    return paths


def measured_components(analysis: dict[str, Any]) -> dict[str, float]:
    """The variance components a paired analysis measured, as rlhf.judge.stats.power takes them:
    seed (sigma_u^2), prompt (a pair's prompt-by-setting variance, 2 sigma_sp^2, the mean over
    the sweep's pairs) and residual (sigma_e^2)."""
    parts = analysis["components"]
    return {"seed": float(parts.seed), "prompt": paired.stats.pair_prompt_variance(analysis["tables"], parts),
            "residual": float(parts.residual)}


def smallest_text(analysis: dict[str, Any], metric: str) -> str:
    """The line naming the smallest difference of the metric the sweep could have separated (80%
    power, one pair at 5%) with its seeds and prompts."""
    parts = measured_components(analysis)
    seeds = min(f["seeds"] for f in analysis["figures"])
    smallest = paired.stats.smallest_difference(parts["seed"], parts["prompt"], parts["residual"], seeds,
                                                analysis["prompts"], settings=len(analysis["settings"]))
    return (f"With {seeds} seeds per setting and {analysis['prompts']} prompts, this sweep could separate a "
            f"difference of {metric} of {_g(smallest)} or more with 80% power (one pair, paired test at 5%; the "
            f"variance components it measured: seed {_g(parts['seed'])}, prompt-by-setting {_g(parts['prompt'])}, "
            f"residual {_g(parts['residual'])}). `python -m rlhf.report <sweep> --plan <difference>` says what "
            "a smaller one needs.")


def plan_text(sweep_dir: Path, difference: float, metric: str | None = None) -> str:
    """What `--plan <difference>` prints: per number of seeds, the prompts needed to separate two
    settings `difference` apart at 80% power, from the sweep's measured variance components."""
    judged = _judged(sweep_dir, metric)
    analysis, metric = judged["analysis"], judged["metric"]
    if not analysis:
        reason = next((s.get("not_paired") for s in judged["stats"] if s.get("not_paired")), None)
        return (f"No plan: {metric} is not measured prompt by prompt in this sweep"
                + (f" ({reason})" if reason else "") + ", so its variance components are unknown.")
    parts = measured_components(analysis)
    rows = paired.stats.plan(difference, parts["seed"], parts["prompt"], parts["residual"],
                             settings=len(analysis["settings"]))
    head = (f"Plan for {metric}: seeds per setting and prompts (shared by every job) with which the paired test "
            f"(two-sided, 5%, one pair) separates two settings {_g(difference)} apart with 80% power in a sweep of "
            f"{len(analysis['settings'])} settings, from the variance components this sweep measured "
            f"({analysis['prompts']} prompts): seed {_g(parts['seed'])}, prompt-by-setting {_g(parts['prompt'])}, "
            f"residual {_g(parts['residual'])}. Against every other of k settings with Holm, plan for a level of "
            "5%/(k-1): more prompts.")
    lines = [head, "", "seeds  prompts  power"]
    for row in rows:
        lines.append(f"{row['seeds']:>5}  " + (f"{row['prompts']:>7}  {row['power']:.2f}" if row["prompts"] else
                                               "      -  not reachable: the seed variance alone is too large"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun directory (multirun/<date>/<time>)")
    parser.add_argument("--metric", help="metric to plot (default: each method's learning metric)")
    parser.add_argument("--plan", type=float, metavar="DIFFERENCE",
                        help="print how many seeds and prompts would separate two settings this far apart (in the "
                             "metric's units) at 80%% power, from the variance components the sweep measured")
    parser.add_argument("--group", metavar="COLUMN",
                        help="the prompts' column that groups them, for per-group figures (default: the jobs' "
                             f"evaluate.group_by, else {GROUP})")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    problem = None
    if not sweep_dir.exists():
        problem = f"{sweep_dir} does not exist (give the sweep's directory, e.g. multirun/<date>/<time>)"
    elif not sweep_dir.is_dir():
        problem = f"{sweep_dir} is a file, not a sweep directory (multirun/<date>/<time>)"
    elif not rundir.job_dirs(sweep_dir):
        problem = f"{sweep_dir} is not a sweep directory (no job directories with a .hydra record in it)"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if args.plan is not None:
        print(plan_text(sweep_dir, args.plan, args.metric))
        return
    for kind, path in write(sweep_dir, args.metric, args.group).items():
        print(f"{kind}: {path}")
    print(verdict(sweep_dir, args.metric, args.group))
