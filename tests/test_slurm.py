"""Sweeps on a real SLURM cluster (the project's own, started by the tests): one job array,
preemption with save-and-requeue, and a 2-task job whose ranks match a single process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import cli_env, job_dir, read_history, run_cli, train

from rlhf.run import rundir

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LAUNCHER = ("hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
            "hydra.launcher.signal_delay_s=30")


def slurm_env(cluster) -> dict:
    return cli_env(**cluster.env())


def test_the_cluster_runs_arrays_and_reports_failures(slurm_cluster, tmp_path):
    env = slurm_env(slurm_cluster)
    assert subprocess.run(["srun", "hostname"], env=env, capture_output=True, text=True, timeout=60).returncode == 0
    script = tmp_path / "task.sh"
    script.write_text(f"#!/bin/bash\necho $SLURM_ARRAY_TASK_ID > {tmp_path}/out_$SLURM_ARRAY_TASK_ID\n")
    job = subprocess.run(["sbatch", "--parsable", "--array=0-3", "-o", "/dev/null", str(script)], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert slurm_cluster.sacct_state(job) == "COMPLETED"
    assert sorted(p.read_text().strip() for p in tmp_path.glob("out_*")) == ["0", "1", "2", "3"]
    failing = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "exit 1"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert slurm_cluster.sacct_state(failing) == "FAILED"


def test_a_sweep_is_one_job_array_with_a_run_dir_per_task(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("rlhf.train", "-m", *LAUNCHER, f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.05,0.1,0.2", "method.max_steps=3", cwd=tmp_path, env=slurm_env(slurm_cluster),
            timeout=900)
    arrays, tasks = set(), set()
    for job in (job_dir(sweep, n) for n in range(3)):
        env = json.loads((job / "env.json").read_text())["slurm"]
        arrays.add(env["SLURM_ARRAY_JOB_ID"])
        tasks.add(env["SLURM_ARRAY_TASK_ID"])
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["global_step"] == 3 and (job / "SUCCESS").is_file()
    assert len(arrays) == 1 and tasks == {"0", "1", "2"}
    assert (sweep / "report.csv").is_file()


def test_preempted_task_saves_requeues_and_resumes(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    env = slurm_env(slurm_cluster)
    command = [sys.executable, "-m", "rlhf.train", "-m", *LAUNCHER, f"hydra.sweep.dir={sweep}",
               f"cache_dir={tmp_path / 'cache'}", "method.num_epochs=3", "method.save_steps=1000",
               "method.logging_steps=1"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    run = sweep / "0_method.logging_steps=1,method.num_epochs=3,method.save_steps=1000"  # cache_dir left out
    history = run / "log_history.jsonl"
    started = time.monotonic()
    while not (history.is_file() and len(history.read_text().splitlines()) > 20):
        assert time.monotonic() - started < 600 and proc.poll() is None, "the task never got going"
        time.sleep(0.5)
    job_id = json.loads((run / "env.json").read_text())["slurm"]["SLURM_JOB_ID"]
    subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)  # as submitit simulates preemption
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    assert (run / "SUCCESS").is_file()
    assert json.loads((run / "env.json").read_text())["slurm"]["SLURM_RESTART_COUNT"] == "1"
    log = (run / "train.log").read_text()
    assert "received SIGUSR2" in log and "resuming from" in log
    steps = [h["step"] for h in read_history(run) if "loss" in h]
    assert steps[-1] == json.loads((run / "metrics.json").read_text())["global_step"]


def test_two_task_slurm_job_matches_a_single_process(slurm_cluster, tmp_path):
    train(tmp_path, "method.max_steps=4", "method.micro_batch_size=16", "method.logging_steps=1",
          run_dir=tmp_path / "single")
    sweep = tmp_path / "sweep"
    run_cli("rlhf.train", "-m", *LAUNCHER, "hardware=cpu_2proc", f"hydra.sweep.dir={sweep}",
            f"cache_dir={tmp_path / 'cache'}", "method.max_steps=4", "method.micro_batch_size=8",
            "method.logging_steps=1", cwd=tmp_path, env=slurm_env(slurm_cluster), timeout=900)
    env = json.loads((job_dir(sweep, 0) / "env.json").read_text())["slurm"]
    assert env["SLURM_JOB_ID"]
    single = [h["loss"] for h in read_history(tmp_path / "single") if "loss" in h]
    ranks = [h["loss"] for h in read_history(job_dir(sweep, 0)) if "loss" in h]
    assert ranks == pytest.approx(single, rel=1e-5, abs=1e-6)


def test_a_halving_sweep_is_one_job_array_per_rung_and_a_rerun_retrains_nothing(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=halving", *LAUNCHER, f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.max_steps=6", "hydra.sweeper.rungs=[2,4]", "method.beta=0.03,0.5,3.0"]
    run_cli("rlhf.train", *args, cwd=tmp_path, env=slurm_env(slurm_cluster), timeout=1500)
    record = json.loads((sweep / "halving.json").read_text())
    assert [r["step"] for r in record["rungs"]] == [2, 4, 6]
    first = [entry["jobs"][0] for entry in record["rungs"][0]["settings"]]
    (winner,) = [entry["jobs"][0] for entry in record["rungs"][0]["settings"] if entry["promoted"]]
    # Rung 1: the three jobs are the tasks of one array; rung 2 and the last: the winner alone,
    # each its own submission (submitit sends a batch of one job as a plain job, not an array).
    def submission(slurm: dict) -> str:
        return slurm.get("SLURM_ARRAY_JOB_ID", slurm["SLURM_JOB_ID"])

    rung1 = {rundir.read_rungs(sweep / job)[0]["slurm"]["SLURM_ARRAY_JOB_ID"] for job in first}
    rung2 = submission(rundir.read_rungs(sweep / winner)[1]["slurm"])
    last = submission(json.loads((sweep / winner / "env.json").read_text())["slurm"])
    assert len(rung1) == 1 and len({*rung1, rung2, last}) == 3
    assert rundir.status(sweep / winner) == rundir.FINISHED
    assert sorted(rundir.status(sweep / job) for job in first) == [rundir.FINISHED, rundir.STOPPED, rundir.STOPPED]
    before = {job: (sweep / job / rundir.HISTORY).stat().st_mtime_ns for job in first}
    run_cli("rlhf.train", *args, cwd=tmp_path, env=slurm_env(slurm_cluster), timeout=900)
    assert {job: (sweep / job / rundir.HISTORY).stat().st_mtime_ns for job in first} == before
    def decisions(rec):
        return [[(s["setting"], s["score"], s["promoted"]) for s in rung["settings"]] for rung in rec["rungs"]]

    assert decisions(json.loads((sweep / "halving.json").read_text())) == decisions(record)
