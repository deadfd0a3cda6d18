"""Halving sweeps (hydra/sweeper=halving, rlhf.launch.halving): the schedule and the promotion
rule, bad input refused before any job starts, a point stopped at its rungs training exactly as
an uninterrupted run, and a sweep through the real CLI that stops its losers, records what it
did, and retrains nothing when run again."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from conftest import cli_env, read_history, run_cli, train

from rlhf.launch import halving
from rlhf.run import rundir


def test_the_rungs_are_min_steps_times_eta_powers_below_max_steps_then_max_steps():
    assert halving.rungs_of(halving.Params(min_steps=4, eta=3), 90) == [4, 12, 36, 90]
    assert halving.rungs_of(halving.Params(min_steps=10, eta=3), 90) == [10, 30, 90]
    assert halving.rungs_of(halving.Params(rungs=[5, 20], eta=2), 40) == [5, 20, 40]
    assert halving.rungs_of(halving.Params(rungs=[5, 40], eta=2), 40) == [5, 40]


def test_the_best_floor_n_over_eta_settings_are_promoted_in_the_metrics_sense():
    scores = {("a",): 0.5, ("b",): 0.9, ("c",): 0.7, ("d",): None, ("e",): 0.6, ("f",): 0.1}
    assert halving.survivors(scores, 3, "maximize") == [("b",), ("c",)]
    assert halving.survivors(scores, 3, "minimize") == [("f",), ("a",)]
    assert halving.survivors(scores, 2, "maximize") == [("b",), ("c",), ("e",)]
    # At least one goes on; a setting whose every seed failed never does.
    assert halving.survivors({("a",): 0.5, ("b",): None}, 3, "maximize") == [("a",)]
    assert halving.survivors({("a",): None, ("b",): None}, 3, "maximize") == []


def test_a_setting_is_its_overrides_without_the_seed_and_scores_the_mean_over_seeds():
    assert halving.setting_of(["method.beta=0.1", "seed=2"]) == ("method.beta=0.1",)
    assert halving.score([0.5, None, 0.7]) == pytest.approx(0.6)
    assert halving.score([None]) is None


POINTS = ["method.beta=0.1,0.5", "seed=1"]
BAD = {  # overrides, what the message names; POINTS unless the case brings its own
    "rungs beyond max_steps": (
        ["method.max_steps=12", "hydra.sweeper.rungs=[4,20]"], ["hydra.sweeper.rungs=[4, 20]", "20 beyond method.max_steps=12"]),
    "eta below 2": (
        ["method.max_steps=12", "hydra.sweeper.min_steps=4", "hydra.sweeper.eta=1"], ["hydra.sweeper.eta=1", "at least 2"]),
    "a metric no job produces": (
        ["method.max_steps=12", "hydra.sweeper.min_steps=4", "hydra.sweeper.metric=generation/nosuch"],
        ["hydra.sweeper.metric=generation/nosuch", "cannot give it", "generation/win_rate"]),
    "one setting": (
        ["method.max_steps=12", "hydra.sweeper.min_steps=4", "method.beta=0.3", "seed=1,2"],
        ["a halving sweep with 1 setting has nothing to stop"]),
    "no fixed length": (
        ["hydra.sweeper.min_steps=4"], ["method.max_steps=-1", "one positive number of optimizer steps"]),
    "no rungs": (["method.max_steps=12"], ["hydra.sweeper.rungs=[10,30]", "hydra.sweeper.min_steps=10"]),
    "a setting it does not have": (
        ["method.max_steps=12", "hydra.sweeper.min_step=4"], ["hydra.sweeper.min_step", "min_steps"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_halving_input_is_one_message_before_any_job_starts(case, tmp_path):
    overrides, expected = BAD[case]
    sweep = tmp_path / "sweep"
    points = [] if any(o.startswith("seed=") for o in overrides) else POINTS
    args = ["-m", "hydra/sweeper=halving", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            *points, *overrides]
    proc = subprocess.run([sys.executable, "-m", "rlhf.train", *args], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and lines[0].startswith("error: "), proc.stderr[-3000:]
    for part in expected:
        assert part in proc.stderr, f"{part!r} not in:\n{proc.stderr}"
    assert not sweep.exists()


EXPERIMENT = """\
# @package _global_
defaults:
  - override /hydra/sweeper: halving
hydra:
  sweeper:
    min_steps: 4
    eta: 1
method:
  max_steps: 12
"""


def test_an_experiment_that_selects_the_halving_sweeper_is_planned_and_refused_before_any_job(tmp_path):
    """A user's experiment (--config-dir) selects the sweeper and sets its eta: the composed config
    decides, so the bad eta is the one message before any job starts, as on the command line
    (before, only a command-line hydra/sweeper=halving was planned, and this one started Hydra
    and died in the sweeper with a traceback)."""
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "halve.yaml").write_text(EXPERIMENT)
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "rlhf.train", "-m", "--config-dir", str(tmp_path / "mine"),
                           "+experiment=halve", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                           *POINTS], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "hydra.sweeper.eta=1" in proc.stderr and "at least 2" in proc.stderr, proc.stderr
    assert not sweep.exists()


def test_a_command_without_a_sweeper_of_its_own_composes_no_hydra_node(tmp_path, monkeypatch):
    """The halving check costs nothing for the common command: a plain sweep, whose configs choose
    no sweeper, is checked without composing the Hydra node (~0.3 s)."""
    from rlhf.launch import cli

    def composed(self):
        raise AssertionError("the Hydra node was composed for a command without a sweeper")

    monkeypatch.setattr(cli._HydraNode, "_compose", composed)
    assert cli.preflight(["-m", "method.beta=0.1,0.5", f"cache_dir={tmp_path / 'cache'}"]) is not None


LENGTH = ["method.max_steps=12", "evaluate.enabled=false"]


def test_a_point_stopped_at_every_rung_trains_exactly_as_an_uninterrupted_run(tmp_path):
    """The same config and seed run to step 12 at once, and stopped at the rungs 4 and 8 (what
    the sweep sets, through the real CLI): every logged loss and learning rate, the eval figures
    and the run's train loss are equal bit for bit, and the stopped run dir ends as an ordinary
    finished one. (Before the Trainer's logging window was restored at a resume, the logs at
    steps 5 and 10 averaged the steps after the resume only: 0.7339 against 0.6985.)"""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    train(tmp_path, *LENGTH, run_dir=whole)
    for step in (4, 8):
        train(tmp_path, *LENGTH, run_dir=stopped, env=cli_env(RLHF_STOP_AT_STEP=str(step)))
        assert rundir.status(stopped) == rundir.STOPPED
        assert [r["step"] for r in rundir.read_rungs(stopped)] == [4, 8][:[4, 8].index(step) + 1]
        assert rundir.latest_checkpoint(stopped).endswith(f"checkpoint-{step}")
    # Launched again at a rung it has reached: nothing to do.
    again = train(tmp_path, *LENGTH, run_dir=stopped, env=cli_env(RLHF_STOP_AT_STEP="8"))
    assert "judged at the rung at step 8 already" in again.stderr + again.stdout
    train(tmp_path, *LENGTH, run_dir=stopped)
    assert rundir.status(stopped) == rundir.FINISHED
    logged = [{k: h[k] for k in ("step", "loss", "learning_rate", "grad_norm") if k in h}
              for h in read_history(whole) if "loss" in h]
    assert len(logged) >= 3
    assert [{k: h[k] for k in ("step", "loss", "learning_rate", "grad_norm") if k in h}
            for h in read_history(stopped) if "loss" in h] == logged
    a, b = rundir.read_metrics(whole), rundir.read_metrics(stopped)
    timing = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    assert {k: v for k, v in a["eval"].items() if k not in timing} == \
        {k: v for k, v in b["eval"].items() if k not in timing}
    assert a["train"]["train_loss"] == b["train"]["train_loss"]
    # The rung record holds the eval set's figures at that step.
    first = rundir.read_rungs(stopped)[0]
    assert first["step"] == 4 and "eval_loss" in first["metrics"]


@pytest.fixture(scope="module")
def halved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("halving")
    sweep = tmp / "sweep"
    args = ["-m", "hydra/sweeper=halving", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp / 'cache'}",
            "method.max_steps=12", "hydra.sweeper.rungs=[4,8]", "hydra.sweeper.eta=3",
            "method.beta=0.03,0.5,3.0", "seed=1"]
    first = run_cli("rlhf.train", *args, cwd=tmp, timeout=1200)
    return tmp, sweep, args, first


def test_a_halving_sweep_stops_its_losers_and_finishes_the_best(halved):
    tmp, sweep, _, first = halved
    record = json.loads((sweep / halving.RECORD).read_text())
    assert record["metric"] == "generation/win_rate" and record["direction"] == "maximize"
    assert [r["step"] for r in record["rungs"]] == [4, 8, 12]
    first_rung = record["rungs"][0]["settings"]
    assert len(first_rung) == 3 and all(s["score"] is not None for s in first_rung)
    promoted = [s for s in first_rung if s["promoted"]]
    assert len(promoted) == 1 and promoted[0]["score"] == max(s["score"] for s in first_rung)
    # Each job's score is its own rung record's win rate.
    for entry in first_rung:
        (job,) = entry["jobs"]
        assert rundir.read_rungs(sweep / job)[0]["metrics"]["generation/win_rate"] == entry["score"]
    winner = promoted[0]["jobs"][0]
    assert rundir.status(sweep / winner) == rundir.FINISHED
    losers = [s["jobs"][0] for s in first_rung if not s["promoted"]]
    assert all(rundir.status(sweep / j) == rundir.STOPPED for j in losers)
    assert [r["step"] for r in rundir.read_rungs(sweep / winner)] == [4, 8]
    # Steps: 3 jobs to 4, the winner on to 8 and 12: 20 of a full sweep's 36.
    assert {k: record["steps"][k] for k in ("trained", "full_sweep", "share")} == \
        {"trained": 20, "full_sweep": 36, "share": pytest.approx(20 / 36)}
    assert "2 stopped at a rung of the halving sweep" in first.stderr + first.stdout
    # The report tells it: every setting at every rung it reached, what it cost, the rung plot.
    section = (sweep / "report.md").read_text().split("## Halving")[1].split("\n## ")[0]
    assert "Trained 20 optimizer steps of the 36 a full sweep of every point would (56%)" in section
    assert section.count("| stopped |") == 2 and section.count("| promoted |") == 2 and section.count("| finished |") == 1
    assert (sweep / "report_rungs.png").is_file()
    # CPU seconds: each rung's the sum of its jobs' sessions, as their records and metrics say.
    cpu = [rundir.read_rungs(sweep / s["jobs"][0])[0]["cpu_seconds"] for s in first_rung]
    assert record["rungs"][0]["cpu_seconds"] == pytest.approx(sum(cpu)) and all(c > 0 for c in cpu)
    assert record["rungs"][2]["cpu_seconds"] == rundir.read_metrics(sweep / winner)["cpu_seconds"] > 0
    assert record["steps"]["cpu_seconds"] == pytest.approx(sum(r["cpu_seconds"] for r in record["rungs"]))
    # GPU seconds: none on the CPU, null rather than 0 in every record, and the report says so.
    assert record["on_gpu"] is False and record["steps"]["gpu_seconds"] is None
    assert all(r["gpu_seconds"] is None for r in record["rungs"])
    assert all("gpu_seconds" in r and r["gpu_seconds"] is None
               for s in first_rung for r in rundir.read_rungs(sweep / s["jobs"][0]))
    final = rundir.read_metrics(sweep / winner)
    assert "gpu_seconds" in final and final["gpu_seconds"] is None
    assert "GPU seconds: none (a CPU run)." in section and "GPU s |" not in section


class MadeUpJobs:
    """Stands in for Hydra's launcher: each job leaves the records a real one leaves (a rung record,
    or at the last rung metrics.json and SUCCESS) with made-up figures: its eval_loss and what its
    session spent, as {setting: (loss, cpu_seconds, gpu_seconds)} per rung's step."""

    def __init__(self, sweep, figures):
        self.sweep, self.figures, self.launched = sweep, figures, []

    def launch(self, batch, initial_job_idx):
        from types import SimpleNamespace

        returns = []
        for number, overrides in enumerate(batch):
            stop = next((o.split("=", 1)[1] for o in overrides if halving.STOP_AT in o), None)
            named = next((o.split("=", 1)[1].strip("'") for o in overrides if o.startswith("hydra.sweep.subdir=")), None)
            point = [o for o in overrides if not o.lstrip("+").startswith("hydra")]
            run_dir = self.sweep / (named or f"{number}_{','.join(point)}")
            run_dir.mkdir(parents=True, exist_ok=True)
            step = int(stop) if stop else 12
            loss, cpu, gpu = self.figures[step][point[0]]
            if stop:
                with open(run_dir / rundir.RUNGS, "a") as f:
                    f.write(json.dumps({"step": step, "metrics": {"eval_loss": loss}, "cpu_seconds": cpu,
                                        "gpu_seconds": gpu}) + "\n")
            else:
                rundir.write_metrics(run_dir, {"eval": {"eval_loss": loss}, "cpu_seconds": cpu, "gpu_seconds": gpu})
                rundir.mark_success(run_dir)
            self.launched.append((step, point[0]))
            returns.append(SimpleNamespace(hydra_cfg=SimpleNamespace(hydra=SimpleNamespace(
                runtime=SimpleNamespace(output_dir=str(run_dir))))))
        return returns


def halving_on_gpus(tmp_path, figures, on_gpu=True):
    settings = {("b=1",): [0], ("b=2",): [1], ("b=3",): [2]}
    schedule = halving.Schedule([4, 12], 3, "eval_loss", "minimize", settings, on_gpu=on_gpu)
    jobs = MadeUpJobs(tmp_path, figures)
    halving.Driver(schedule, [["b=1"], ["b=2"], ["b=3"]], jobs, tmp_path).run()
    return json.loads((tmp_path / halving.RECORD).read_text()), jobs


GPU_FIGURES = {4: {"b=1": (0.6, 5.0, 8.25), "b=2": (0.4, 5.0, 8.25), "b=3": (0.7, 5.0, 8.25)},
               12: {"b=2": (0.3, 9.0, 16.0)}}


def test_gpu_seconds_are_summed_per_rung_and_for_the_sweep_and_reported_against_a_full_sweep(tmp_path):
    """Made-up job records that carry GPU seconds: each rung's the sum of its jobs' sessions, the
    sweep's the sum of its rungs, and the report gives them with a full sweep's at the same GPU
    seconds per step (20 steps trained of 36: 40.75 GPU s -> about 73)."""
    from rlhf.judge import halving_report

    record, jobs = halving_on_gpus(tmp_path, GPU_FIGURES)
    assert jobs.launched == [(4, "b=1"), (4, "b=2"), (4, "b=3"), (12, "b=2")]
    assert [r["gpu_seconds"] for r in record["rungs"]] == [24.75, 16.0]
    assert [r["cpu_seconds"] for r in record["rungs"]] == [15.0, 9.0]
    assert record["on_gpu"] is True and record["steps"]["gpu_seconds"] == 40.75
    section = halving_report.section(tmp_path)
    assert "GPU seconds: 41 (a full sweep at the same GPU s per step: about 73)" in section, section
    assert "wall seconds times the GPUs the job holds" in section
    assert "| rung CPU s | rung GPU s |" in section and "| 24.75 |" in section and "| 16 |" in section


def test_gpu_seconds_are_unknown_when_a_job_left_none_and_absent_on_the_cpu(tmp_path):
    """A job on a GPU whose record has no GPU seconds makes its rung's and the sweep's unknown (not
    a smaller sum); a CPU job among GPU ones adds none (its null); a sweep on the CPU has none."""
    from rlhf.cluster import devices
    from rlhf.config.schema import HardwareConfig

    gpu = {"gpu_seconds": 4.0}
    assert halving.gpu_total([gpu, {"gpu_seconds": None}], on_gpu=True) == 4.0
    assert halving.gpu_total([gpu, {"cpu_seconds": 1.0}], on_gpu=True) is None
    assert halving.gpu_total([gpu, None], on_gpu=True) is None
    assert halving.gpu_total([gpu], on_gpu=False) is None
    assert halving.total([{"cpu_seconds": 1.5}, {"cpu_seconds": 2.0}], "cpu_seconds") == 3.5
    assert halving.total([{"cpu_seconds": 1.5}, None], "cpu_seconds") is None
    # A job's GPU seconds: its session's wall seconds times its training processes and vLLM GPUs.
    assert devices.gpu_seconds(HardwareConfig(accelerator="cuda", nodes=2, processes_per_node=4), 10.0) == 80.0
    assert devices.gpu_seconds(HardwareConfig(accelerator="cuda", vllm_gpus=[1]), 2.5) == 5.0
    assert devices.gpu_seconds(HardwareConfig(), 10.0) is None
    figures = {step: {k: (v[0], v[1], None) for k, v in by.items()} for step, by in GPU_FIGURES.items()}
    record, _ = halving_on_gpus(tmp_path, figures, on_gpu=False)
    assert record["steps"]["gpu_seconds"] is None and [r["gpu_seconds"] for r in record["rungs"]] == [None, None]


def test_running_a_finished_halving_sweep_again_retrains_nothing(halved):
    tmp, sweep, args, _ = halved
    before = {p.name: (p / rundir.HISTORY).stat().st_mtime_ns for p in rundir.job_dirs(sweep)}
    again = run_cli("rlhf.train", *args, cwd=tmp, timeout=600)
    output = again.stderr + again.stdout
    assert output.count("nothing to do") == 3 + 1 + 1, output[-3000:]  # every launch of every rung
    assert "resuming from" not in output and "step 1/" not in output
    assert {p.name: (p / rundir.HISTORY).stat().st_mtime_ns for p in rundir.job_dirs(sweep)} == before


SIX_BY_TWO = ["method.beta=0.01,0.03,0.1,0.3,1.0,3.0", "seed=1,2", "method.max_steps=36"]


def steps_trained(sweep):
    """The optimizer steps a sweep dir's jobs trained, read from the jobs: a finished one's
    global_step, a stopped one's last rung."""
    return sum(rundir.read_metrics(job)["global_step"] if rundir.is_finished(job)
               else max(r["step"] for r in rundir.read_rungs(job)) for job in rundir.job_dirs(sweep))


def test_halving_picks_what_the_full_sweep_cannot_separate_from_its_best_at_under_45_percent_of_its_steps(tmp_path):
    """The issue's done-when, on the embedded DPO task: six betas x two seeds as a halving sweep
    (rungs at steps 4 and 12 of 36, eta 3), then the full sweep of the same points, whose report
    (paired by prompt, Holm over every pair) must not separate halving's pick from its own best,
    with halving at most 45% of the full sweep's training steps.

    The full sweep is the halving sweep's dir copied and run to the end by the plain sweep of the
    same points (no halving sweeper): the rung is an environment variable, not part of a run dir's
    name, so the plain sweep finds each job's dir; a job stopped at a rung resumes from its
    checkpoint (bit for bit as an uninterrupted run:
    test_a_point_stopped_at_every_rung_trains_exactly_as_an_uninterrupted_run) and a finished one
    has nothing to do, so no step is trained twice.

    What two seeds can say: at this length the full sweep separates none of the six (the report's
    smallest separable difference is larger than their spread), so the verdict alone would pass
    whatever halving kept. The promotions are checked against the jobs' own rung records too: at
    every rung, no stopped setting scored above a promoted one."""
    halved, full = tmp_path / "halving", tmp_path / "full"
    cache = f"cache_dir={tmp_path / 'cache'}"
    run_cli("rlhf.train", "-m", "hydra/sweeper=halving", "hydra.sweeper.rungs=[4,12]", "hydra.sweeper.eta=3",
            *SIX_BY_TWO, f"hydra.sweep.dir={halved}", cache, cwd=tmp_path, timeout=900)
    record = json.loads((halved / halving.RECORD).read_text())
    (pick,) = [entry["setting"] for rung in record["rungs"] if rung["last"] for entry in rung["settings"]]
    assert record["steps"]["trained"] == steps_trained(halved) == 12 * 4 + 4 * 8 + 2 * 24

    shutil.copytree(halved, full)
    for name in (halving.RECORD, "report_rungs.png"):  # the copy becomes a plain sweep
        (full / name).unlink()
    finished = run_cli("rlhf.train", "-m", *SIX_BY_TWO, f"hydra.sweep.dir={full}", cache, cwd=tmp_path, timeout=900)
    output = finished.stdout + finished.stderr
    assert [p.name for p in rundir.job_dirs(full)] == [p.name for p in rundir.job_dirs(halved)]
    assert output.count("resuming from") == 10 and output.count("nothing to do") == 2, output[-3000:]
    assert all(rundir.status(job) == rundir.FINISHED and rundir.read_metrics(job)["global_step"] == 36
               for job in rundir.job_dirs(full))
    share = record["steps"]["trained"] / steps_trained(full)
    assert share <= 0.45 and share == pytest.approx(record["steps"]["share"])

    run_cli("rlhf.report", str(full), cwd=tmp_path, timeout=300)
    with open(full / "report_comparisons.csv", newline="") as f:
        rows = {f"method.beta={row['method.beta']}": row for row in csv.DictReader(f)}
    assert len(rows) == 6 and pick in rows, (pick, list(rows))
    (best,) = [name for name, row in rows.items() if row["difference_to_best"] == "best"]
    assert pick == best or rows[pick]["separable"] == "no", (pick, best, rows[pick])

    # Each rung's decision, from the full sweep's jobs' own rung records (kept when they resumed).
    jobs = {entry["setting"]: entry["jobs"] for rung in record["rungs"] for entry in rung["settings"]}
    for rung in record["rungs"][:-1]:
        scores = {entry["setting"]: sum(next(r for r in rundir.read_rungs(full / job) if r["step"] == rung["step"])
                                        ["metrics"]["generation/win_rate"] for job in jobs[entry["setting"]]) / 2
                  for entry in rung["settings"]}
        promoted = [e["setting"] for e in rung["settings"] if e["promoted"]]
        stopped = [e["setting"] for e in rung["settings"] if not e["promoted"]]
        assert len(promoted) == max(1, len(rung["settings"]) // 3)
        assert min(scores[s] for s in promoted) >= max(scores[s] for s in stopped), (rung["step"], scores, promoted)
