"""python -m rlhf.gpu_check: its plan for a machine, the command each check runs, how a run's
outcome is read and reported, its own model, and the command itself on this machine (no GPU:
one line and a non-zero exit). No GPU run is faked: the one run here is a CPU check, said so."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_cli
from rlhf.cluster import gpu_check
from rlhf.config.checks import cuda_driver_present
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError, RlhfError
from rlhf.cluster.gpu_check import (
    FAILED,
    INSTALL,
    MODEL_DIR,
    PASSED,
    SKIPPED,
    STEPS,
    Check,
    Machine,
    Planned,
    commands,
    outcome,
    plan,
    render_plan,
    render_table,
    report,
    step_seconds,
)

ALL_PACKAGES = frozenset(INSTALL)
SINGLE_GPU = ("dpo_bf16", "lora_dpo", "qlora_dpo", "grpo_transformers", "grpo_vllm_colocate")
PER_GPU = {"ddp": "ddp", "fsdp": "fsdp", "zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3"}
# A small shape of the checks' model, for the tests that build one on the CPU.
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2}


def runs(planned: list[Planned]) -> list[str]:
    return [p.check.name for p in planned if p.skip is None]


def skips(planned: list[Planned]) -> dict[str, str]:
    return {p.check.name: p.skip for p in planned if p.skip is not None}


# ------------------------------------------------------------------ the plan


def test_one_gpu_without_optional_packages_runs_the_single_gpu_checks_and_says_why_not_the_others():
    planned = plan(Machine(1))
    assert runs(planned) == ["dpo_bf16", "lora_dpo", "grpo_transformers"]
    skipped = skips(planned)
    assert skipped["qlora_dpo"] == "bitsandbytes is not installed (pip install bitsandbytes)"
    assert skipped["grpo_vllm_colocate"] == "vllm is not installed (pip install -e '.[vllm]')"
    for name in ("grpo_vllm_server", *PER_GPU):
        assert skipped[name] == "needs 2 GPUs, this machine has 1"


def test_each_optional_package_adds_its_checks_and_a_second_gpu_the_multi_gpu_ones():
    assert runs(plan(Machine(1, frozenset({"bitsandbytes", "vllm"})))) == list(SINGLE_GPU)
    two = plan(Machine(2, frozenset({"vllm"})))
    assert runs(two) == [*(n for n in SINGLE_GPU if n != "qlora_dpo"), "grpo_vllm_server", "ddp", "fsdp"]
    assert skips(two) == {"qlora_dpo": "bitsandbytes is not installed (pip install bitsandbytes)",
                          "zero2": "deepspeed is not installed (pip install -e '.[deepspeed]')",
                          "zero3": "deepspeed is not installed (pip install -e '.[deepspeed]')"}
    assert skips(plan(Machine(2, frozenset({"deepspeed"}))))["grpo_vllm_server"] == \
        "vllm is not installed (pip install -e '.[vllm]')"
    assert skips(plan(Machine(8, ALL_PACKAGES))) == {}
    assert set(skips(plan(Machine(0, ALL_PACKAGES)))) == {c.name for c in gpu_check.CHECKS}


def test_only_selects_checks_in_the_plans_order_and_refuses_an_unknown_name():
    assert [p.check.name for p in plan(Machine(2), "fsdp, dpo_bf16")] == ["dpo_bf16", "fsdp"]
    with pytest.raises(RlhfError, match=r"no check named 'fsdpp' \(did you mean 'fsdp'\?\); the checks: dpo_bf16,"):
        plan(Machine(2), "fsdpp,dpo_bf16")
    with pytest.raises(RlhfError, match="no check named at all"):
        plan(Machine(2), ",")


# ------------------------------------------------------------------ the commands


def composed(command: list[str]):
    """The config a command's overrides compose to, validated (Hydra's own keys aside)."""
    return validate(compose_job([a for a in command[3:] if not a.startswith("hydra.")]))


def test_every_check_trains_the_built_model_through_the_platform_with_its_own_strategy(tmp_path):
    (tmp_path / MODEL_DIR).mkdir()
    machine = Machine(4, ALL_PACKAGES)
    for planned in plan(machine):
        check = planned.check
        command = commands(check, machine, tmp_path, ports=(8123, 51300))["train"]
        assert command[:3] == [sys.executable, "-m", "rlhf.train"]
        assert f"hydra.run.dir={tmp_path / check.name}" in command
        try:
            run = composed(command)
        except ConfigError as error:  # QLoRA here, without bitsandbytes: that is its one problem
            assert check.name == "qlora_dpo" and importlib.util.find_spec("bitsandbytes") is None
            assert [p for p in error.problems if "bitsandbytes" not in p] == []
            run = validate(compose_job([a for a in command[3:] if not a.startswith(("hydra.", "peft="))]))
        assert run.model.name_or_path == str(tmp_path / MODEL_DIR) and run.model.dtype == "bfloat16"
        assert run.method.max_steps == STEPS and run.method.logging_steps == 1
        hardware = run.hardware
        assert hardware.accelerator == "cuda" and hardware.precision == "bf16"
        if check.name in PER_GPU:  # one process per GPU of the machine, with the check's strategy
            assert hardware.distributed == PER_GPU[check.name]
            assert hardware.processes_per_node == hardware.gpus_per_node == 4 and hardware.world_size == 4
            assert run.method.kind == "dpo" and hardware.train_gpus is None
        else:
            assert hardware.world_size == 1 and hardware.train_gpus == [0]
    by_name = {p.check.name: p.check for p in plan(machine)}

    def run_of(name: str):
        return composed(commands(by_name[name], machine, tmp_path)["train"])

    assert run_of("lora_dpo").peft.adapter == "lora"
    assert run_of("grpo_transformers").method.kind == "grpo" and not run_of("grpo_transformers").method.use_vllm
    colocated = run_of("grpo_vllm_colocate")
    assert colocated.method.use_vllm and colocated.method.vllm_mode == "colocate"
    assert colocated.vllm.gpu_memory_utilization <= 0.5  # vLLM shares the GPU with training
    assert commands(by_name["qlora_dpo"], machine, tmp_path)["train"].count("peft=qlora") == 1


def test_the_server_check_serves_the_built_model_on_gpu_1_and_trains_against_it_on_gpu_0(tmp_path):
    from rlhf.cluster.vllm_server import server_command

    (tmp_path / MODEL_DIR).mkdir()
    machine = Machine(2, frozenset({"vllm"}))
    check = next(c for c in gpu_check.CHECKS if c.name == "grpo_vllm_server")
    found = commands(check, machine, tmp_path, ports=(8123, 51300))
    assert found["server"][:3] == [sys.executable, "-m", "rlhf.vllm_serve"]
    # The same overrides, but Hydra's own (the server composes the config, runs no job).
    assert found["server"][3:] == [a for a in found["train"][3:] if not a.startswith("hydra.")]
    served, env = server_command(composed(found["server"]))
    assert served[served.index("serve") + 1] == str(tmp_path / MODEL_DIR)
    assert served[served.index("--port") + 1] == "8123" and env["CUDA_VISIBLE_DEVICES"] == "1"
    run = composed(found["train"])
    assert run.method.use_vllm and run.method.vllm_mode == "server" and run.hardware.train_gpus == [0]
    assert (run.vllm.port, run.vllm.group_port) == (8123, 51300)


def test_the_plan_lists_each_checks_commands_and_each_skip_with_its_reason(tmp_path):
    text = render_plan(plan(Machine(2, frozenset({"vllm"}))), Machine(2, frozenset({"vllm"})), tmp_path)
    lines = text.splitlines()
    assert lines[0] == "GPU checks for this machine: 2 GPUs; bitsandbytes no, vllm yes, deepspeed no"
    assert any("zero3" in line and "skip" in line and "pip install -e '.[deepspeed]'" in line for line in lines)
    assert any(line.strip().startswith("server: -m rlhf.vllm_serve") for line in lines)
    fsdp = next(i for i, line in enumerate(lines) if line.split()[:2] == ["fsdp", "run"])
    assert "hardware=gpu_fsdp_8" in lines[fsdp + 1] and "hardware.processes_per_node=2" in lines[fsdp + 1]
    assert "'hardware.train_gpus=[0]'" in text  # quoted as a shell needs it


# ------------------------------------------------------------------ a run's outcome and the report


def write_run(run_dir: Path, history: list[dict] | None = None, metrics: dict | None = None,
              success: bool = False, failed: str | None = None) -> Path:
    run_dir.mkdir(parents=True)
    if history is not None:
        (run_dir / "log_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if success:
        (run_dir / "SUCCESS").write_text("")
    if failed is not None:
        (run_dir / "FAILED").write_text(failed)
    return run_dir


def test_step_time_is_the_median_interval_per_step_between_logged_training_steps():
    history = [{"step": 1, "loss": 0.7, "time": 100.0}, {"step": 2, "loss": 0.6, "time": 101.0},
               {"step": 4, "loss": 0.5, "time": 104.0},  # two steps in 3 s: 1.5 s each
               {"step": 4, "eval_loss": 0.5, "time": 110.0},  # an eval: not a training step
               {"step": 5, "loss": 0.4, "time": 106.0}]
    assert step_seconds(history) == 1.5
    assert step_seconds(history[:1]) is None and step_seconds([]) is None


def test_a_run_passes_only_with_exit_0_and_success_and_fails_with_its_failures_last_line(tmp_path):
    history = [{"step": s, "loss": 0.5, "time": 10.0 + 0.25 * s} for s in range(1, 6)]
    passed = write_run(tmp_path / "ok", history, {"peak_gpu_memory_mib": 1234}, success=True)
    assert outcome(passed, 0) == {"status": PASSED, "step_seconds": 0.25, "peak_gpu_mib": 1234, "error": None}
    failed = write_run(tmp_path / "failed", history[:2], failed="RuntimeError: NCCL error\nranks 1 timed out\n")
    assert outcome(failed, 1, "a log\nTraceback ...\n") == {
        "status": FAILED, "step_seconds": 0.25, "peak_gpu_mib": None, "error": "ranks 1 timed out"}
    # Killed before writing FAILED (or refused before the run dir existed): the command's last words.
    crashed = outcome(tmp_path / "never", 2, "starting\nerror: invalid config: method.beta=-1.0 is out of range\n\n")
    assert crashed["status"] == FAILED and crashed["error"] == "error: invalid config: method.beta=-1.0 is out of range"
    assert outcome(tmp_path / "never", -9, "")["error"] == "exited with code -9"
    unfinished = write_run(tmp_path / "unfinished", history)
    unfinished = outcome(unfinished, 0)
    assert unfinished["status"] == FAILED and "exited 0 but left no SUCCESS" in unfinished["error"]


def test_the_table_and_the_json_report_every_check():
    results = [
        {"name": "dpo_bf16", "status": PASSED, "step_seconds": 0.1234, "peak_gpu_mib": 2048, "error": None},
        {"name": "qlora_dpo", "status": SKIPPED, "reason": "bitsandbytes is not installed (pip install bitsandbytes)"},
        {"name": "fsdp", "status": FAILED, "step_seconds": None, "peak_gpu_mib": None,
         "error": "ValueError: a | b " + "x" * 300},
    ]
    lines = render_table(results).splitlines()
    assert lines[:2] == ["| check | result | step s | peak GPU MiB | note |", "|---|---|---|---|---|"]
    assert lines[2] == "| dpo_bf16 | passed | 0.123 | 2048 |  |"
    assert lines[3] == "| qlora_dpo | skipped |  |  | bitsandbytes is not installed (pip install bitsandbytes) |"
    assert lines[4].startswith("| fsdp | failed |  |  | ValueError: a \\| b xxx") and lines[4].endswith("... |")
    assert lines[-1] == "1 of 3 checks passed, 1 failed, 1 skipped"
    assert gpu_check.exit_code(results) == 1 and gpu_check.exit_code(results[:2]) == 0
    written = json.loads(json.dumps(report({"gpus": 2}, {"parameters": 76}, results)))
    assert written["summary"] == {PASSED: 1, FAILED: 1, SKIPPED: 1} and written["checks"] == results
    assert written["steps"] == STEPS


# ------------------------------------------------------------------ the checks' model


def test_the_default_model_is_a_qwen2_of_50_to_150_million_parameters():
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from rlhf.assets import ASSETS

    vocab = len(AutoTokenizer.from_pretrained(ASSETS / "models" / "tiny-chatml"))
    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, tie_word_embeddings=True, **gpu_check.MODEL_SHAPE))
    assert 50e6 <= sum(p.numel() for p in model.parameters()) <= 150e6


def test_the_built_model_loads_back_and_a_broken_save_does_not(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    built = gpu_check.build_model(tmp_path / "model", **SMALL)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert type(model).__name__ == built["architecture"] == "Qwen2ForCausalLM"
    assert model.config.vocab_size == len(tokenizer) == built["vocab_size"]
    assert "<|im_start|>" in tokenizer.chat_template and str(model.dtype) == "torch.bfloat16"
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert gpu_check.load_back(tmp_path / "model") is None
    # An adapter loads with its base (what LoRA and QLoRA runs save).
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp_path / "adapter")
    assert gpu_check.load_back(tmp_path / "adapter") is None
    # A save without a layer's weights (as a sharded save that gathered nothing would leave).
    weights = load_file(tmp_path / "model" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layers.1.mlp.up_proj" not in k},
              tmp_path / "model" / "model.safetensors", metadata={"format": "pt"})
    problem = gpu_check.load_back(tmp_path / "model")
    assert problem.startswith("weights not as the model expects them: missing_keys")
    assert "layers.1.mlp.up_proj" in problem
    assert gpu_check.load_back(tmp_path / "nowhere") == f"no model dir {tmp_path / 'nowhere'}"


@pytest.mark.slow
def test_a_check_runs_the_real_platform_and_reads_its_run_dir_here_on_the_cpu(tmp_path):
    """run_check end to end with a check of the CPU (this machine has no GPU): the platform trains
    the built model in a subprocess, the outcome is read from its run dir and the saved model
    loads back; a refused config fails with the command's own last line."""
    gpu_check.build_model(tmp_path / MODEL_DIR, **SMALL)
    cpu = Check("cpu_dpo", "DPO on the CPU", ("hardware=cpu", "method=dpo", "evaluate.enabled=false",
                                              "dataset.eval=[]", "dataset.num_rows=64"), gpus=0)
    result = gpu_check.run_check(Planned(cpu, None), Machine(0), tmp_path)
    assert result["status"] == PASSED, result
    assert result["step_seconds"] > 0 and result["peak_gpu_mib"] is None  # no CUDA: no GPU figure
    assert (tmp_path / "cpu_dpo" / "SUCCESS").is_file() and Path(result["log"]).is_file()
    bad = Check("bad_beta", "a refused config", ("hardware=cpu", "method=dpo", "method.beta=-1"), gpus=0)
    result = gpu_check.run_check(Planned(bad, None), Machine(0), tmp_path)
    assert result["status"] == FAILED
    assert result["error"] == "error: invalid config: method.beta=-1.0 is out of range: it must be > 0"
    skipped = gpu_check.run_check(Planned(bad, "needs 2 GPUs, this machine has 0"), Machine(0), tmp_path)
    assert skipped == {"name": "bad_beta", "what": "a refused config", "status": SKIPPED,
                       "reason": "needs 2 GPUs, this machine has 0"}


# ------------------------------------------------------------------ the command on this machine

needs_cpu_machine = pytest.mark.skipif(cuda_driver_present(), reason="this machine has an NVIDIA driver")


@needs_cpu_machine
def test_without_a_gpu_the_command_says_so_in_one_line_and_exits_non_zero(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlhf.gpu_check"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    said = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2 and proc.stdout == ""
    assert said == ["error: no GPU to check: this machine has no NVIDIA driver (no nvidia-smi on PATH, no "
                    "/proc/driver/nvidia); run python -m rlhf.gpu_check on a GPU host (--list prints its plan "
                    "anywhere)"]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {"torch", "transformers", "trl"}  # said at once, without loading torch
    assert list(tmp_path.iterdir()) == []  # no outputs dir, no model built
    # --list prints the plan anywhere; a misspelled check is one line too.
    listed = run_cli("rlhf.gpu_check", "--list", cwd=tmp_path)
    assert listed.stdout.splitlines()[0].startswith("GPU checks for this machine: 0 GPUs;")
    assert "needs 1 GPU, this machine has 0" in listed.stdout and "needs 2 GPUs" in listed.stdout
    wrong = run_cli("rlhf.gpu_check", "--only", "fsdpp", cwd=tmp_path, check=False)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines() == [
        "error: --only 'fsdpp': no check named 'fsdpp' (did you mean 'fsdp'?); the checks: dpo_bf16, lora_dpo, "
        "qlora_dpo, grpo_transformers, grpo_vllm_colocate, grpo_vllm_server, ddp, fsdp, zero2, zero3"]
