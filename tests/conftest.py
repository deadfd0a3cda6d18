"""Shared helpers: run the real command line in a subprocess, in a scratch directory.

Every test that trains uses the real entry point (`python -m rlhf.train`), real Hydra, the
real TRL trainer, the embedded tiny model and embedded data, with its own run dir and data
cache under pytest's tmp_path, so tests never share state by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "WANDB_MODE": "offline",
    })
    env.update(extra)
    return env


def run_cli(module: str, *args: str, cwd: Path, timeout: float = 600, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in `cwd`; on an unexpected exit code, show its output."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}")
    return proc


def train(tmp: Path, *overrides: str, run_dir: Path | None = None, check: bool = True,
          timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """One training job of `python -m rlhf.train` with its run dir and cache inside `tmp`."""
    run_dir = run_dir or tmp / "run"
    args = [f"hydra.run.dir={run_dir}", f"cache_dir={tmp / 'cache'}", *overrides]
    return run_cli("rlhf.train", *args, cwd=tmp, check=check, timeout=timeout, env=env)


def job_dir(sweep: Path, number: int) -> Path:
    """The run dir of a sweep's job `number`: `<number>_<its overrides>`."""
    found = [p for p in sweep.iterdir() if p.is_dir() and p.name.split("_", 1)[0] == str(number)]
    assert len(found) == 1, f"job {number} of {sweep}: {found or sorted(p.name for p in sweep.iterdir())}"
    return found[0]


def read_history(run_dir: Path) -> list[dict]:
    lines = (run_dir / "log_history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def train_losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in read_history(run_dir) if "loss" in h]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """The embedded default, trained once per session: `python -m rlhf.train` and nothing else."""
    tmp = tmp_path_factory.mktemp("default")
    train(tmp, run_dir=tmp / "run")
    return tmp / "run"


TINY_MODEL = REPO / "rlhf" / "assets" / "models" / "tiny-chatml"


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> Path:
    """A reward model as `method=reward` saves one: the tiny model's architecture as a
    LlamaForSequenceClassification with one label (random head, seeded), its pad token set,
    saved with the tiny tokenizer. Built here until a real reward run is cheap to train."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    directory = tmp_path_factory.mktemp("reward_model") / "rm"
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    config = AutoConfig.from_pretrained(TINY_MODEL, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def fake_run_dir(parent: Path, model: Path, kind: str, finished: bool = True) -> Path:
    """A run dir as a finished (or unfinished) `method=<kind>` job leaves it: config.yaml,
    model/ (a copy of `model`), SUCCESS."""
    import shutil

    run_dir = parent / f"{kind}_run{'' if finished else '_unfinished'}"
    shutil.copytree(model, run_dir / "model")
    (run_dir / "config.yaml").write_text(f"method:\n  kind: {kind}\nseed: 42\n")
    if finished:
        (run_dir / "SUCCESS").write_text("")
    return run_dir


@pytest.fixture(scope="session")
def reward_run_dir(tiny_reward_model, tmp_path_factory) -> Path:
    """The run dir of a finished `method=reward` job holding the tiny reward model."""
    return fake_run_dir(tmp_path_factory.mktemp("runs"), tiny_reward_model, "reward")


def _slurm_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("slurm_cluster", REPO / "launchers" / "slurm_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def slurm_cluster():
    """The project's SLURM with one node (installed and started by launchers/slurm_cluster.py;
    test_slurm_nodes.py switches it to two nodes and back); stopped at the end only if this
    session started it."""
    module = _slurm_module()
    cluster = module.LocalSlurm()
    was_up = cluster.is_up()
    cluster.start()
    yield cluster
    if not was_up:
        cluster.stop()
