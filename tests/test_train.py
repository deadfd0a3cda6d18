"""The embedded default end to end: it learns, leaves a complete run dir, and reproduces."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from conftest import run_cli, train, train_losses


def test_default_run_learns_the_embedded_task(default_run):
    metrics = json.loads((default_run / "metrics.json").read_text())
    assert metrics["method"] == "dpo" and metrics["metric"] == "eval_rewards/accuracies"
    assert metrics["eval"]["eval_rewards/accuracies"] >= 0.9
    assert metrics["metric_value"] == metrics["eval"]["eval_rewards/accuracies"]
    # It learned: the held-out loss fell from ln 2 (a model with no preference) well below it.
    history = [json.loads(l) for l in (default_run / "log_history.jsonl").read_text().splitlines()]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert eval_losses[-1] < 0.5 * eval_losses[0]


def test_default_run_dir_is_complete(default_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = yaml.safe_load((default_run / "config.yaml").read_text())
    assert config["method"]["kind"] == "dpo" and "${" not in (default_run / "config.yaml").read_text()
    env = json.loads((default_run / "env.json").read_text())
    assert env["packages"]["torch"] and env["packages"]["trl"] and env["packages"]["transformers"]
    assert "commit" in env["git"] and "dirty" in env["git"]
    metrics = json.loads((default_run / "metrics.json").read_text())
    assert metrics["train"]["train_loss"] > 0 and metrics["global_step"] > 0
    assert (default_run / "SUCCESS").is_file() and not (default_run / "FAILED").exists()
    assert (default_run / ".hydra" / "config.yaml").is_file()
    model = AutoModelForCausalLM.from_pretrained(default_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(default_run / "model")
    assert model.config.vocab_size == len(tokenizer)
    assert "<|im_start|>" in tokenizer.chat_template


def test_same_seed_gives_bit_identical_losses_and_saved_config_reruns(default_run, tmp_path):
    first = train_losses(default_run)
    assert len(first) > 10
    train(tmp_path, run_dir=tmp_path / "again")
    assert train_losses(tmp_path / "again") == first
    # Once more from the first run's saved config alone (not from conf/).
    rerun = tmp_path / "rerun"
    train(tmp_path, f"--config-path={default_run}", "--config-name=config", run_dir=rerun)
    assert train_losses(rerun) == first
    saved = yaml.safe_load((default_run / "config.yaml").read_text())
    rerun_config = yaml.safe_load((rerun / "config.yaml").read_text())
    for where_it_ran in ("cache_dir", "code_path"):  # absolute paths of the place, not the experiment
        saved.pop(where_it_ran), rerun_config.pop(where_it_ran)
    assert rerun_config == saved


def test_a_different_seed_gives_different_losses_in_a_run_dir_named_after_its_overrides(default_run, tmp_path):
    # Where Hydra puts it by default: outputs/<date>/<time>_<overrides> (cache_dir left out).
    run_cli("rlhf.train", "seed=7", "method.max_steps=3", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    [run_dir] = (tmp_path / "outputs").glob("*/*")
    assert re.fullmatch(r"\d\d-\d\d-\d\d_method\.max_steps=3,seed=7", run_dir.name), run_dir.name
    assert train_losses(run_dir)[:2] != train_losses(default_run)[:2]


def test_a_failed_run_is_never_marked_successful(tmp_path):
    run_dir = tmp_path / "run"
    # Valid rows (a bad row is refused before the job starts), all longer than method.max_length:
    # the job's data stage, which has the tokenizer, fails on them.
    (tmp_path / "broken.jsonl").write_text(json.dumps({"question": "q", "chosen": "mango " * 400, "rejected": "b"})
                                           + "\n")
    proc = train(tmp_path, f"dataset.path={tmp_path / 'broken.jsonl'}", "dataset.eval=[]", run_dir=run_dir,
                 check=False)
    assert proc.returncode == 1
    assert "no training rows are left from" in proc.stderr and "broken.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "SUCCESS").exists()
    assert "no training rows are left" in (run_dir / "FAILED").read_text()
    # One message: once on the terminal (stderr, as `error: ...`), once in train.log.
    output = proc.stdout + proc.stderr
    assert output.count("no training rows are left") == 1, output
    assert "error: " in proc.stderr and "no training rows are left" not in proc.stdout
    assert (run_dir / "train.log").read_text().count("no training rows are left") == 1


def test_a_gpu_config_on_a_machine_without_cuda_stops_before_the_data_and_model(tmp_path):
    """The job's own check, for a machine with an NVIDIA driver whose torch sees no device (on
    a machine with no driver at all, the launching process refuses the command first:
    tests/test_preflight.py)."""
    import os

    from conftest import cli_env

    bin_dir = tmp_path / "bin"  # a driver, as far as the launching process can tell
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = cli_env(CUDA_VISIBLE_DEVICES="",  # no GPU visible, even on a machine that has one
                  PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = train(tmp_path, "hardware=gpu", run_dir=tmp_path / "run", check=False, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "hardware.accelerator=cuda, but this job was given no GPU (CUDA_VISIBLE_DEVICES is empty)" in proc.stderr
    assert "hardware=cpu" in proc.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert "given no GPU" in log and "data cache" not in log  # stopped before the data stage
    # One GPU given, and torch (a CPU build here) sees none: torch's own view is checked next.
    proc = train(tmp_path, "hardware=gpu", run_dir=tmp_path / "run2", check=False,
                 env={**env, "CUDA_VISIBLE_DEVICES": "0"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "hardware.accelerator=cuda, but torch" in proc.stderr and "sees no CUDA device" in proc.stderr


FAULTS = """
import ctypes, os, resource, sys
import torch
from rlhf.job.process import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory
libc = ctypes.CDLL("libc.so.6")  # glibc here
# Start from glibc's documented defaults, held fixed: 128 KiB for both thresholds.
assert libc.mallopt(M_MMAP_THRESHOLD, 128 << 10) and libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
if sys.argv[1] == "keep":
    assert keep_freed_memory(256)

def step():  # a step's activations: several large tensors alive together, then all freed
    held = [torch.ones(8 << 20, dtype=torch.uint8) for _ in range(6)]
    del held

for _ in range(5):  # the first steps grow the heap and fault their pages in either way (steps 1-4 here)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
touched = 20 * (48 << 20) // os.sysconf("SC_PAGE_SIZE")
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / touched)
"""


def test_a_cpu_process_reuses_freed_tensor_memory_instead_of_faulting_it_in_again():
    """keep_freed_memory (applied to every CPU training process) keeps a step's freed tensors
    for the next step. The baseline is glibc's defaults held fixed, where every 8 MiB tensor is
    mapped fresh and unmapped when freed, so its pages fault in again on every step. (Left to
    itself, glibc raises its thresholds as it goes; whether that ends the faults in this loop
    depends on the heap's layout, and differs from one fresh process to the next, so the test
    pins the starting point.) Each side runs in a fresh process: no earlier test shaped the heap.
    Figures are faults per page a step touches; with transparent huge pages one fault maps many
    pages, so the baseline is lower there (about 0.2 rather than 1)."""
    faults = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
        faults[mode] = float(out.stdout.strip().splitlines()[-1])
    assert faults["default"] > 0.1, faults  # the baseline faults visibly: the measurement can see it
    assert faults["keep"] < 0.01, faults  # kept memory: (almost) nothing faults in again
