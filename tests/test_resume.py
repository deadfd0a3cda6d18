"""Jobs that stop and start again: a killed run resumes from its checkpoint and ends where an
uninterrupted run ends; a finished sweep is not redone; only the failed job of a sweep is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_env, job_dir, read_history, run_cli, train

pytestmark = pytest.mark.slow

# A checkpoint every 20 steps and a log every 7: each checkpoint falls inside a logging window, so
# a resumed run has to carry the loss of the steps between the last log and the checkpoint.
LONG = ("method.num_epochs=2", "method.save_steps=20", "method.logging_steps=7")


def _wait_for(predicate, timeout: float, what: str):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    train(tmp_path, *LONG, run_dir=tmp_path / "whole")
    run_dir = tmp_path / "killed"
    args = [sys.executable, "-m", "rlhf.train", f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}", *LONG]
    proc = subprocess.Popen(args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: (run_dir / "checkpoints" / "checkpoint-40" / "trainer_state.json").is_file(), 300,
                  "the second checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to save anything more
        proc.wait()
    assert not (run_dir / "SUCCESS").exists()
    proc = train(tmp_path, *LONG, run_dir=run_dir)
    assert "resuming from" in (run_dir / "train.log").read_text()
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["global_step"] == whole["global_step"]
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert resumed["eval"][key] == pytest.approx(whole["eval"][key], rel=1e-4, abs=1e-5), key
    losses = {h["step"]: h["loss"] for h in read_history(run_dir) if "loss" in h}
    reference = {h["step"]: h["loss"] for h in read_history(tmp_path / "whole") if "loss" in h}
    last = max(losses)
    assert losses[last] == pytest.approx(reference[last], rel=1e-4)
    # The run-level figures cover the whole run, not only the steps after the resume.
    assert resumed["train"]["train_loss"] == pytest.approx(whole["train"]["train_loss"], rel=1e-4), \
        (resumed["train"]["train_loss"], whole["train"]["train_loss"])
    assert resumed["train"]["num_tokens"] == whole["train"]["num_tokens"] > 0
    # TRL's own count, as it logs it, goes on from the checkpoint instead of restarting at zero.
    assert resumed["train"]["last_logged"]["num_tokens"] == whole["train"]["last_logged"]["num_tokens"]


def test_terminated_run_saves_where_it_stopped_and_resumes(tmp_path):
    """SIGTERM (what SLURM sends on preemption) makes the trainer save at the end of the step."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "rlhf.train", f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
            "method.num_epochs=2", "method.save_steps=1000", "method.logging_steps=1"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(lambda: (run_dir / "log_history.jsonl").is_file() and
              len((run_dir / "log_history.jsonl").read_text().splitlines()) > 15, 300, "some training steps")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and not (run_dir / "SUCCESS").exists()
    saved = sorted(run_dir.glob("checkpoints/checkpoint-*"))
    assert len(saved) == 1 and int(saved[0].name.split("-")[1]) > 10, stderr[-2000:]
    train(tmp_path, "method.num_epochs=2", "method.save_steps=1000", "method.logging_steps=1", run_dir=run_dir)
    assert (run_dir / "SUCCESS").is_file()
    assert f"resuming from {saved[0]}" in (run_dir / "train.log").read_text()


def _interrupt_after_steps(args: list[str], run_dirs: str, cwd, steps: int = 8) -> subprocess.CompletedProcess:
    """Start `args`, wait until a run dir matching the glob `run_dirs` (under `cwd`) logged `steps`
    training steps, send a real SIGINT to the whole process group (what Ctrl-C at a terminal
    does), and wait for the command to end."""
    proc = subprocess.Popen(args, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)

    def logged() -> bool:
        return any(len(h.read_text().splitlines()) > steps for h in cwd.glob(f"{run_dirs}/log_history.jsonl"))

    _wait_for(logged, 600, "some training steps")
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_the_rerun_resumes(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["method.num_epochs=2", "method.save_steps=1000", "method.logging_steps=1"]
    args = [sys.executable, "-m", "rlhf.train", f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
            *overrides]
    proc = _interrupt_after_steps(args, "run", tmp_path)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr[-3000:]
    assert "Re-run the same command to resume" in proc.stderr and not (run_dir / "SUCCESS").exists()
    assert not (run_dir / "FAILED").exists()  # interrupted is not failed
    saved = sorted(run_dir.glob("checkpoints/checkpoint-*"))
    assert len(saved) == 1 and int(saved[0].name.split("-")[1]) > 8, proc.stderr[-2000:]
    train(tmp_path, *overrides, run_dir=run_dir)
    assert (run_dir / "SUCCESS").is_file()
    assert f"resuming from {saved[0]}" in (run_dir / "train.log").read_text()


def test_ctrl_c_in_a_sweep_stops_it_after_the_current_jobs_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "rlhf.train", "-m", "method.beta=0.1,0.2", f"hydra.sweep.dir={sweep}",
            f"cache_dir={tmp_path / 'cache'}", "method.num_epochs=2", "method.save_steps=1000",
            "method.logging_steps=1", "evaluate.enabled=false"]
    proc = _interrupt_after_steps(args, "sweep/0_*", tmp_path)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Re-run the same command to resume" in proc.stderr
    assert len(list(sweep.glob("0_*/checkpoints/checkpoint-*"))) == 1
    assert not list(sweep.glob("1_*"))  # the second job never started


def test_rerunning_a_finished_sweep_redoes_nothing_and_a_failed_job_only_is_redone(tmp_path):
    sweep = tmp_path / "sweep"
    data = tmp_path / "late.jsonl"
    from rlhf.assets import asset_path

    # Valid rows, each longer than method.max_length (256 tokens): validation and the row check
    # before the first job pass it, and only the job's data stage, which has the tokenizer, finds
    # that the length rule (drop) leaves it no training rows. (A bad row would now stop the whole
    # sweep before its first job.)
    data.write_text(json.dumps({"question": "Name a fruit.", "chosen": "mango " * 400, "rejected": "tiger"}) + "\n")
    # The good job's data is a copy of the embedded pairs: both jobs leave the embedded task, so
    # both run without its generation eval (a sweep whose jobs differ in that is refused).
    good = tmp_path / "pairs.jsonl"
    good.write_text(open(asset_path("data/topics_pairs.train.jsonl")).read())
    command = ["-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}", "method.max_steps=2",
               f"dataset.path={good},{data}", "dataset.eval=[]"]
    first = run_cli("rlhf.train", *command, cwd=tmp_path, check=False)
    assert first.returncode == 1 and "did not finish" in first.stderr
    dirs = sorted(p.name for p in sweep.iterdir())
    # Run dirs named after overrides holding paths and brackets: flat, safe, the same every time.
    job0, job1 = job_dir(sweep, 0), job_dir(sweep, 1)
    assert job1.name.startswith("1_dataset.eval=_,dataset.path=late.jsonl,method.max_steps=2-")
    assert (job0 / "SUCCESS").is_file() and (job1 / "FAILED").is_file()
    assert "no training rows are left" in (job1 / "FAILED").read_text()
    finished_at = (job0 / "metrics.json").stat().st_mtime_ns

    data.write_text((open(asset_path("data/topics_pairs.train.jsonl")).read()))  # the cause is fixed
    second = run_cli("rlhf.train", *command, cwd=tmp_path)
    assert (job0 / "metrics.json").stat().st_mtime_ns == finished_at  # not redone
    assert (job1 / "SUCCESS").is_file() and not (job1 / "FAILED").exists()
    assert "already finished" in (job0 / "train.log").read_text()

    redone_at = (job1 / "metrics.json").stat().st_mtime_ns
    third = run_cli("rlhf.train", *command, cwd=tmp_path)  # everything finished: nothing to do
    assert third.returncode == 0 and second.returncode == 0
    assert (job1 / "metrics.json").stat().st_mtime_ns == redone_at
    assert (job0 / "metrics.json").stat().st_mtime_ns == finished_at
    assert sorted(p.name for p in sweep.iterdir()) == dirs  # each job found its own dir again


def test_a_run_dir_of_another_config_is_refused_not_skipped(tmp_path):
    run_dir = tmp_path / "run"
    train(tmp_path, "method.max_steps=2", run_dir=run_dir)
    proc = train(tmp_path, "method.max_steps=3", run_dir=run_dir, check=False)
    assert proc.returncode == 1
    assert "holds a finished run of a different config (method.max_steps: 2 there, 3 now)" in proc.stderr
    assert (run_dir / "SUCCESS").is_file()  # the finished run is left as it was


def test_two_local_processes_match_a_single_process_with_the_same_global_batch(tmp_path):
    train(tmp_path, "method.max_steps=4", "method.micro_batch_size=16", "method.logging_steps=1",
          run_dir=tmp_path / "single")
    train(tmp_path, "hardware=cpu_2proc", "method.max_steps=4", "method.micro_batch_size=8",
          "method.logging_steps=1", run_dir=tmp_path / "two")
    single = [h["loss"] for h in read_history(tmp_path / "single") if "loss" in h]
    two = [h["loss"] for h in read_history(tmp_path / "two") if "loss" in h]
    assert len(two) == 4 and two == pytest.approx(single, rel=1e-5, abs=1e-6)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["global_step"] == 4
