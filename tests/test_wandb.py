"""Weights & Biases in offline mode: a run per job with the resolved config, a sweep grouped,
a re-run continuing the same W&B run, and no secret written anywhere."""

from __future__ import annotations

import json

import pytest

from conftest import cli_env, job_dir, run_cli
from wandb_log import run_record

pytestmark = pytest.mark.slow

SECRET = "planted-secret-5f3a9c1e7b"


def _offline_runs(job):
    return sorted((job / "wandb").glob("offline-run-*"))


def test_wandb_offline_sweep_groups_runs_keeps_ids_and_leaks_no_secret(tmp_path):
    sweep = tmp_path / "sweep"
    env = cli_env(WANDB_API_KEY=SECRET, HF_TOKEN=SECRET, WANDB_MODE="offline")
    command = ["-m", "logger=wandb", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
               "method.beta=0.1,0.2", "method.max_steps=3"]
    run_cli("rlhf.train", *command, cwd=tmp_path, env=env)
    ids = {}
    jobs = {"0": job_dir(sweep, 0), "1": job_dir(sweep, 1)}
    # Where metrics go does not name the dir; what is trained does.
    assert [j.name for j in jobs.values()] == ["0_method.beta=0.1,method.max_steps=3",
                                               "1_method.beta=0.2,method.max_steps=3"]
    for job in ("0", "1"):
        runs = _offline_runs(jobs[job])
        assert len(runs) == 1, runs
        run_id = (jobs[job] / "wandb_id").read_text().strip()
        assert runs[0].name.endswith(run_id)
        ids[job] = run_id
        record = run_record(next(runs[0].glob("run-*.wandb")))
        # The resolved config is attached; the sweep is the group, the overrides the name.
        beta = record["config"]["method"]["beta"]
        assert beta in (0.1, 0.2) and record["config"]["dataset"]["type"] == "chatml.intel"
        assert record["id"] == run_id and record["group"] == "/".join(sweep.parts[-2:])
        assert f"method.beta={beta}" in record["name"]
    assert ids["0"] != ids["1"]

    # A re-run of an unfinished job continues its W&B run (same id, a new offline segment).
    (jobs["1"] / "SUCCESS").unlink()
    run_cli("rlhf.train", *command, cwd=tmp_path, env=env)
    assert (jobs["1"] / "wandb_id").read_text().strip() == ids["1"]
    assert [r.name.endswith(ids["1"]) for r in _offline_runs(jobs["1"])] == [True, True]
    assert len(_offline_runs(jobs["0"])) == 1  # finished: not touched

    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []
    report = (sweep / "report.md").read_text()
    assert SECRET not in report and json.dumps(SECRET) not in report
