"""What the launching process checks before any job starts, beyond the config itself: the
machine (a GPU where the jobs train)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_cli
from rlhf.config.checks import cuda_driver_present
from rlhf.config.compose import compose_job
from rlhf.config.validate import validate
from rlhf.errors import ConfigError

GOOD = [{"question": f"Name a fruit, number {i}?", "chosen": "mango", "rejected": "tiger"} for i in range(12)]
HEAVY = ("torch", "trl", "transformers")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def cli_importtime(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """The real command line under `python -X importtime`: its result and the top-level
    packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlhf.train", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    return proc, imported


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ the machine

needs_cpu_machine = pytest.mark.skipif(cuda_driver_present(), reason="this machine has an NVIDIA driver")


@needs_cpu_machine
def test_cuda_on_a_machine_without_one_is_one_message_and_no_run_dir(tmp_path):
    proc, imported = cli_importtime(tmp_path, "hardware=gpu", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert errors(proc.stderr) == ["error: invalid config: hardware.accelerator=cuda, but this machine has no NVIDIA "
                                   "driver (no nvidia-smi on PATH, no /proc/driver/nvidia): choose hardware=cpu, run "
                                   "on a GPU host, or send the jobs to GPU nodes with hydra/launcher=slurm"]
    assert not (tmp_path / "run").exists()
    assert not imported & set(HEAVY)  # found without torch, so without initialising CUDA either
    # A sweep whose every point asks for the GPU: still one message, and no sweep dir.
    proc = run_cli("rlhf.train", "-m", "hardware=gpu", "method.beta=0.1,0.2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and len(errors(proc.stderr)) == 1 and "no NVIDIA driver" in proc.stderr
    assert not (tmp_path / "sweep").exists()


@needs_cpu_machine
def test_the_machine_is_checked_only_where_the_jobs_train(tmp_path):
    from rlhf.cli import preflight

    cache = f"cache_dir={tmp_path / 'cache'}"
    for launcher in ([], ["hydra/launcher=local_parallel"]):  # this machine trains: refused here
        with pytest.raises(ConfigError, match="no NVIDIA driver"):
            preflight(["-m", *launcher, "hardware=gpu", cache])
    # SLURM: the login node has no GPU, its compute nodes do; each job checks its own node.
    assert preflight(["-m", "hydra/launcher=slurm", "hardware=gpu", cache]).hardware.accelerator == "cuda"
    with pytest.raises(ConfigError, match="no NVIDIA driver"):  # without -m, Hydra runs the job here
        preflight(["hydra/launcher=slurm", "hardware=gpu", cache])
    # A job validating its saved config (a SLURM task, an extra rank) checks the config only.
    assert validate(compose_job(["hardware=gpu"])).hardware.accelerator == "cuda"
    # --cfg job prints the config of a GPU run on any machine.
    assert run_cli("rlhf.train", "--cfg", "job", "hardware=gpu", cwd=tmp_path).returncode == 0
