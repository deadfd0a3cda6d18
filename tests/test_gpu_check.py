"""python -m rlhf.gpu_check: its plan for a machine (a GPU host, or --cpu), the command each
check runs, what a finished run dir must show for a check to pass (rlhf.cluster.findings: each
finding shown failing on a run dir that breaks it), how outcomes are reported, its own model,
and the command itself on this machine: without a GPU one line and exit 2; with --cpu the
checks that have a CPU option, run for real through the same code. No GPU run is faked."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import cli_env, run_cli
from rlhf.cluster import findings as found_in
from rlhf.cluster import gpu_check
from rlhf.cluster.findings import Expect, findings
from rlhf.cluster.gpu_check import (
    CPU_SHAPE,
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
from rlhf.config.checks import cuda_driver_present
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError, RlhfError
from rlhf.launch.compose import compose_job

ALL_PACKAGES = frozenset(INSTALL)
SINGLE_GPU = ("dpo_fp32_weights", "dpo_bf16_weights", "lora_dpo", "qlora_dpo", "grpo_transformers", "grpo_vllm_colocate")
PER_GPU = {"ddp": "ddp", "fsdp": "fsdp", "grpo_fsdp": "fsdp", "zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3"}
ON_THE_CPU = {"dpo_fp32_weights": "cpu", "lora_dpo": "cpu", "grpo_transformers": "cpu", "ddp": "cpu_2proc",
              "fsdp": "cpu_2proc_fsdp", "grpo_fsdp": "cpu_2proc_fsdp"}
CPU = Machine(0, cpu=True)


def runs(planned: list[Planned]) -> list[str]:
    return [p.check.name for p in planned if p.skip is None]


def skips(planned: list[Planned]) -> dict[str, str]:
    return {p.check.name: p.skip for p in planned if p.skip is not None}


def check_named(name: str) -> Check:
    return next(c for c in gpu_check.CHECKS if c.name == name)


# ------------------------------------------------------------------ the plan


def test_one_gpu_without_optional_packages_runs_the_single_gpu_checks_and_says_why_not_the_others():
    planned = plan(Machine(1))
    assert runs(planned) == ["dpo_fp32_weights", "dpo_bf16_weights", "lora_dpo", "grpo_transformers"]
    skipped = skips(planned)
    assert skipped["qlora_dpo"] == "bitsandbytes is not installed (pip install bitsandbytes)"
    assert skipped["dpo_flash_packed"] == "flash_attn is not installed (pip install flash-attn --no-build-isolation)"
    assert skipped["grpo_vllm_colocate"] == "vllm is not installed (pip install -e '.[vllm]')"
    for name in ("grpo_vllm_server", "grpo_vllm_serve", *PER_GPU):
        assert skipped[name] == "needs 2 GPUs, this machine has 1"


def test_each_optional_package_adds_its_checks_and_a_second_gpu_the_multi_gpu_ones():
    assert runs(plan(Machine(1, frozenset({"bitsandbytes", "vllm"})))) == list(SINGLE_GPU)
    assert runs(plan(Machine(1, frozenset({"flash_attn"}))))[:2] == ["dpo_fp32_weights", "dpo_flash_packed"]
    two = plan(Machine(2, frozenset({"vllm"})))
    assert runs(two) == [*(n for n in SINGLE_GPU if n != "qlora_dpo"), "grpo_vllm_server", "grpo_vllm_serve", "ddp",
                         "fsdp", "grpo_fsdp"]
    assert skips(two) == {"qlora_dpo": "bitsandbytes is not installed (pip install bitsandbytes)",
                          "dpo_flash_packed": "flash_attn is not installed (pip install flash-attn --no-build-isolation)",
                          "zero2": "deepspeed is not installed (pip install -e '.[deepspeed]')",
                          "zero3": "deepspeed is not installed (pip install -e '.[deepspeed]')"}
    assert skips(plan(Machine(2, frozenset({"deepspeed"}))))["grpo_vllm_server"] == \
        "vllm is not installed (pip install -e '.[vllm]')"
    assert skips(plan(Machine(8, ALL_PACKAGES))) == {}
    assert set(skips(plan(Machine(0, ALL_PACKAGES)))) == {c.name for c in gpu_check.CHECKS}


def test_the_cpu_plan_runs_each_check_that_has_a_cpu_option_and_skips_the_gpu_paths():
    planned = plan(CPU)
    assert runs(planned) == list(ON_THE_CPU)
    assert set(skips(planned).values()) == {"a GPU path: no CPU option runs it (run it on a GPU host)"}


def test_only_selects_checks_in_the_plans_order_and_refuses_an_unknown_name():
    assert [p.check.name for p in plan(Machine(2), "fsdp, dpo_fp32_weights")] == ["dpo_fp32_weights", "fsdp"]
    with pytest.raises(RlhfError, match=r"no check named 'fsdpp' \(did you mean 'fsdp'\?\); the checks: dpo_fp32_weights,"):
        plan(Machine(2), "fsdpp,dpo_fp32_weights")
    with pytest.raises(RlhfError, match="no check named at all"):
        plan(Machine(2), ",")


# ------------------------------------------------------------------ the commands


def composed(command: list[str]):
    """The config a command's overrides compose to, validated (Hydra's own keys aside)."""
    return validate(compose_job([a for a in command[3:] if not a.startswith("hydra.")]))


def composed_train(check: Check, machine: Machine, out: Path):
    command = commands(check, machine, out)["train"]
    try:
        return composed(command)
    except ConfigError as error:  # QLoRA here, without bitsandbytes: that is its one problem
        assert check.name == "qlora_dpo" and importlib.util.find_spec("bitsandbytes") is None
        assert [p for p in error.problems if "bitsandbytes" not in p] == []
        return validate(compose_job([a for a in command[3:] if not a.startswith(("hydra.", "peft="))]))


def test_every_check_trains_the_built_model_in_the_default_precision_with_its_own_strategy(tmp_path):
    (tmp_path / MODEL_DIR).mkdir()
    machine = Machine(4, ALL_PACKAGES)
    for planned in plan(machine):
        check = planned.check
        command = commands(check, machine, tmp_path)["train"]
        assert command[:3] == [sys.executable, "-m", "rlhf.train"]
        assert f"hydra.run.dir={tmp_path / check.name}" in command
        run = composed_train(check, machine, tmp_path)
        assert run.model.name_or_path == str(tmp_path / MODEL_DIR)
        # The platform's default (float32 weights that train, bf16 autocast), but where the check is about bf16.
        assert run.model.dtype == ("bfloat16" if check.name == "dpo_bf16_weights" else "auto")
        assert run.method.max_steps == STEPS and run.method.logging_steps == 1
        hardware = run.hardware
        assert hardware.accelerator == "cuda" and hardware.precision == "bf16"
        if check.name in PER_GPU:  # one process per GPU of the machine, with the check's strategy
            assert hardware.distributed == PER_GPU[check.name]
            assert hardware.processes_per_node == hardware.gpus_per_node == 4 and hardware.world_size == 4
            assert hardware.train_gpus is None
        else:
            assert hardware.world_size == 1 and hardware.train_gpus == [0]
        assert run.method.kind == ("grpo" if "grpo" in check.name else "dpo")
    assert composed_train(check_named("lora_dpo"), machine, tmp_path).peft.adapter == "lora"
    grpo = composed_train(check_named("grpo_transformers"), machine, tmp_path)
    assert not grpo.method.use_vllm and grpo.method.reward_funcs == ["rlhf.cluster.gpu_check.varied_reward"]
    colocated = composed_train(check_named("grpo_vllm_colocate"), machine, tmp_path)
    assert colocated.method.use_vllm and colocated.method.vllm_mode == "colocate"
    assert colocated.vllm.gpu_memory_utilization <= 0.5  # vLLM shares the GPU with training
    assert commands(check_named("qlora_dpo"), machine, tmp_path)["train"].count("peft=qlora") == 1


def test_the_cpu_plan_runs_the_same_overrides_on_the_cpu_options(tmp_path):
    (tmp_path / MODEL_DIR).mkdir()
    for name, option in ON_THE_CPU.items():
        gpu, cpu = (commands(check_named(name), machine, tmp_path)["train"] for machine in (Machine(2), CPU))
        assert cpu[3] == f"hardware={option}"
        assert [a for a in cpu[4:]] == [a for a in gpu[4:] if not a.startswith("hardware.")]
        run = composed(cpu)
        assert run.hardware.accelerator == "cpu" and run.model.dtype == "auto"
        assert run.hardware.world_size == (2 if name in PER_GPU else 1)


def test_the_grpo_checks_reward_tells_completions_apart():
    scores = gpu_check.varied_reward(["aaaa", "abcd", [{"role": "assistant", "content": "abab"}], ""])
    assert scores == [0.25, 1.0, 0.5, 0.0]


def test_the_job_owned_server_check_is_the_training_command_alone_as_a_slurm_job_runs_it(tmp_path):
    from rlhf.cluster.vllm_server import job_starts_server

    (tmp_path / MODEL_DIR).mkdir()
    machine = Machine(2, frozenset({"vllm"}))
    found = commands(check_named("grpo_vllm_server"), machine, tmp_path)
    assert list(found) == ["train"]
    run = composed(found["train"])
    assert job_starts_server(run) and run.hardware.train_gpus == [0] and run.hardware.vllm_gpus == [1]
    assert gpu_check.expectation(check_named("grpo_vllm_server")) == Expect(own_server=True)


def test_the_server_started_by_hand_serves_the_built_model_on_gpu_1_at_the_ports_the_check_chose(tmp_path):
    from rlhf.cluster.vllm_server import server_command

    (tmp_path / MODEL_DIR).mkdir()
    machine = Machine(2, frozenset({"vllm"}))
    found = commands(check_named("grpo_vllm_serve"), machine, tmp_path, ports=(8123, 51300))
    assert found["server"][:3] == [sys.executable, "-m", "rlhf.vllm_serve"]
    # The same overrides, but Hydra's own (the server composes the config, runs no job).
    assert found["server"][3:] == [a for a in found["train"][3:] if not a.startswith("hydra.")]
    served, env = server_command(composed(found["server"]))
    assert served[served.index("serve") + 1] == str(tmp_path / MODEL_DIR)
    assert served[served.index("--port") + 1] == "8123" and env["CUDA_VISIBLE_DEVICES"] == "1"
    run = composed(found["train"])
    assert run.method.use_vllm and run.method.vllm_mode == "server" and run.hardware.train_gpus == [0]
    assert (run.vllm.port, run.vllm.group_port) == (8123, 51300)
    assert gpu_check.expectation(check_named("grpo_vllm_serve")) == Expect(own_server=False)


def test_the_plan_lists_each_checks_commands_and_each_skip_with_its_reason(tmp_path):
    text = render_plan(plan(Machine(2, frozenset({"vllm"}))), Machine(2, frozenset({"vllm"})), tmp_path)
    lines = text.splitlines()
    assert lines[0] == "GPU checks for this machine: 2 GPUs; bitsandbytes no, vllm yes, deepspeed no, flash_attn no"
    assert any("zero3" in line and "skip" in line and "pip install -e '.[deepspeed]'" in line for line in lines)
    assert any(line.strip().startswith("server: -m rlhf.vllm_serve") for line in lines)
    fsdp = next(i for i, line in enumerate(lines) if line.split()[:2] == ["fsdp", "run"])
    assert "hardware=gpu_fsdp_8" in lines[fsdp + 1] and "hardware.processes_per_node=2" in lines[fsdp + 1]
    assert "'hardware.train_gpus=[0]'" in text  # quoted as a shell needs it
    cpu = render_plan(plan(CPU), CPU, tmp_path).splitlines()
    assert cpu[0] == "Checks on the CPU options (--cpu)"
    assert any("hardware=cpu_2proc_fsdp" in line for line in cpu)


# ------------------------------------------------------------------ what a finished run dir must show


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> Path:
    """The checks' model in its --cpu shape: the start every run dir below is compared with."""
    out = tmp_path_factory.mktemp("start") / MODEL_DIR
    gpu_check.build_model(out, **CPU_SHAPE)
    return out


def trained_copy(start: Path, model_dir: Path, shift: float = 1e-3) -> None:
    """A saved model as training leaves it: the start's files, every weight moved (float32)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(start, model_dir)
    weights = load_file(start / "model.safetensors")
    save_file({k: v.float() + shift for k, v in weights.items()}, model_dir / "model.safetensors",
              metadata={"format": "pt"})


def run_dir_of(tmp_path: Path, start: Path, distributed: str = "fsdp", processes: int = 2) -> Path:
    """A finished run dir of a two-process FSDP job that trained as asked."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    hardware = {"accelerator": "cpu", "nodes": 1, "processes_per_node": processes, "distributed": distributed}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(start)},
                                                         "hardware": hardware}))
    metrics = {"distributed": {"type": "FSDP", "processes": 2, "fsdp_version": 2, "checkpointed_layers": 0,
                               "fsdp_units": {"Qwen2DecoderLayer": 2, "Qwen2ForCausalLM": 1}},
               "train": {"train_loss": 0.69}, "generation": {"metrics": {"topic_reward": 0.1, "win_rate": 0.5}},
               "job_peak_rss_mib": 640}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "log_history.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 0.69 - 0.01 * s, "time": 100.0 + s}) + "\n" for s in range(1, 4)))
    (run_dir / "SUCCESS").write_text("")
    trained_copy(start, run_dir / MODEL_DIR)
    return run_dir


def edit_metrics(run_dir: Path, **changes) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(changes)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_a_run_dir_that_trained_as_asked_has_no_finding(tmp_path, start_model):
    run_dir = run_dir_of(tmp_path, start_model)
    assert findings(run_dir) == []
    assert outcome(run_dir, 0, expect=Expect())["status"] == PASSED


def test_a_ddp_fallback_where_fsdp_was_asked_is_a_finding(tmp_path, start_model):
    run_dir = run_dir_of(tmp_path, start_model)
    edit_metrics(run_dir, distributed={"type": "MULTI_CPU", "processes": 2})
    assert findings(run_dir) == ["asked for hardware.distributed=fsdp on 2 processes (FSDP), the ranks ran MULTI_CPU "
                                 "on 2 (metrics.json distributed): the strategy fell back"]
    result = outcome(run_dir, 0, expect=Expect())  # exit 0 and SUCCESS: passed before this check
    assert result["status"] == FAILED and result["findings"] == findings(run_dir)
    edit_metrics(run_dir, distributed={"type": "FSDP", "processes": 1})  # one rank alone
    assert "the ranks ran FSDP on 1" in findings(run_dir)[0]
    # FSDP, but the decoder layers are not its shard units (one unit: the whole model).
    edit_metrics(run_dir, distributed={"type": "FSDP", "processes": 2, "fsdp_version": 2,
                                       "fsdp_units": {"Qwen2ForCausalLM": 1}})
    assert findings(run_dir) == ["FSDP ran as version 2 with 0 decoder layers of 2 as shard units (metrics.json "
                                 "distributed.fsdp_units: {'Qwen2ForCausalLM': 1}); expected FSDP2, each layer a unit"]
    edit_metrics(run_dir, distributed=None)
    assert findings(run_dir) == ["metrics.json records no `distributed` block: how the ranks ran is unknown"]


def test_padding_free_asked_for_and_run_padded_is_a_finding(tmp_path, start_model):
    run_dir = run_dir_of(tmp_path, start_model)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "method": {"padding_free": True}}))
    edit_metrics(run_dir, batches={"layout": "padding_free", "packed_calls": 10, "padded_calls": 0})
    assert findings(run_dir) == []
    edit_metrics(run_dir, batches={"layout": "padded", "why": "the model cannot run packed rows (see the log)"})
    assert findings(run_dir) == ["asked for method.padding_free=true, the batches ran padded (the model cannot run "
                                 "packed rows (see the log); metrics.json batches): the layout fell back"]
    edit_metrics(run_dir, batches={"layout": "padding_free", "packed_calls": 10, "padded_calls": 2,
                                   "padded_because": ["inputs token_type_ids are not packed"]})
    assert findings(run_dir) == ["padding-free ran 10 model calls packed and 2 padded (inputs token_type_ids are not "
                                 "packed; metrics.json batches)"]


def test_the_strategy_asked_for_is_read_from_the_config():
    assert found_in.asked({"nodes": 1, "processes_per_node": 1, "distributed": "fsdp"}) == ("NO", 1)
    assert found_in.asked({"nodes": 2, "processes_per_node": 8, "distributed": "ddp", "accelerator": "cuda"}) == \
        ("MULTI_GPU", 16)
    assert found_in.asked({"nodes": 1, "processes_per_node": 2, "distributed": "ddp", "accelerator": "cpu"}) == \
        ("MULTI_CPU", 2)
    assert found_in.asked({"processes_per_node": 8, "distributed": "deepspeed_zero3"}) == ("DEEPSPEED", 8)


def test_unchanged_weights_are_a_finding(tmp_path, start_model):
    run_dir = run_dir_of(tmp_path, start_model)
    shutil.copy(start_model / "model.safetensors", run_dir / MODEL_DIR / "model.safetensors")
    [problem] = findings(run_dir)
    assert problem.startswith("26 of 26 weights did not change from the starting model (the optimizer did not move "
                              "them): model.embed_tokens.weight, model.layers.0.input_layernorm.weight")
    assert problem.endswith("and 23 more")
    # One weight left where it started (as bf16 weights leave a norm's at small learning rates).
    trained_copy(start_model, tmp_path / "again")
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "again" / "model.safetensors")
    weights["model.norm.weight"] = load_file(start_model / "model.safetensors")["model.norm.weight"].float()
    save_file(weights, run_dir / MODEL_DIR / "model.safetensors", metadata={"format": "pt"})
    assert findings(run_dir) == ["1 of 26 weights did not change from the starting model (the optimizer did not "
                                 "move them): model.norm.weight"]


def test_a_nan_loss_is_a_finding(tmp_path, start_model):
    run_dir = run_dir_of(tmp_path, start_model)
    with open(run_dir / "log_history.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 4, "loss": float("nan"), "time": 104.0}) + "\n")
    assert findings(run_dir) == ["1 of 4 logged training losses are not finite (step 4: nan; log_history.jsonl)"]
    edit_metrics(run_dir, train={"train_loss": float("inf")})
    assert findings(run_dir)[1] == "metrics.json train.train_loss is inf"
    (run_dir / "log_history.jsonl").write_text(json.dumps({"step": 1, "eval_loss": 0.7}) + "\n")
    assert findings(run_dir)[0] == "no training loss was logged (log_history.jsonl)"


def test_a_missing_key_in_the_saved_model_is_a_finding(tmp_path, start_model):
    from safetensors.torch import load_file, save_file

    run_dir = run_dir_of(tmp_path, start_model)
    path = run_dir / MODEL_DIR / "model.safetensors"
    weights = load_file(path)
    save_file({k: v for k, v in weights.items() if "layers.1.mlp.up_proj" not in k}, path, metadata={"format": "pt"})
    assert findings(run_dir) == ["the saved model does not load back as saved: missing_keys "
                                 "model.layers.1.mlp.up_proj.weight"]
    save_file({**weights, "model.layers.9.extra": weights["model.norm.weight"].clone()}, path, metadata={"format": "pt"})
    assert findings(run_dir) == ["the saved model does not load back as saved: unexpected_keys model.layers.9.extra"]
    shutil.rmtree(run_dir / MODEL_DIR)
    assert findings(run_dir) == [f"no saved model: {run_dir / MODEL_DIR} does not exist"]


def test_an_adapter_whose_lora_b_never_moved_or_that_lacks_a_key_is_a_finding(tmp_path, start_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    run_dir = run_dir_of(tmp_path, start_model)
    shutil.rmtree(run_dir / MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(start_model, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")) \
        .save_pretrained(run_dir / MODEL_DIR)
    path = run_dir / MODEL_DIR / "adapter_model.safetensors"
    assert findings(run_dir) == ["4 of 4 LoRA B matrices are still zero, their start (the optimizer did not move "
                                 "them): base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight, "
                                 "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight, "
                                 "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight and 1 more"]
    trained = {k: v + 1e-3 for k, v in load_file(path).items()}
    save_file(trained, path, metadata={"format": "pt"})
    assert findings(run_dir) == []
    save_file({k: v for k, v in trained.items() if "layers.1.self_attn.v_proj.lora_A" not in k}, path,
              metadata={"format": "pt"})
    assert findings(run_dir) == ["the saved model does not load back as saved: missing_keys "
                                 "base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight"]


def test_a_job_without_its_generation_eval_or_its_own_server_is_a_finding(tmp_path, start_model):
    run_dir = run_dir_of(tmp_path, start_model)
    assert findings(run_dir, Expect(own_server=True)) == [
        "the job started no vLLM server of its own (no vllm_server.log in the run dir)"]
    (run_dir / "vllm_server.log").write_text("INFO: started\n")
    assert findings(run_dir, Expect(own_server=True)) == []
    edit_metrics(run_dir, generation={"metrics": {"topic_reward": float("nan")}})
    assert findings(run_dir) == ["generation eval figures not finite: {'topic_reward': nan}"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["generation"]
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "generation_off": "no scorer is set"}))
    assert findings(run_dir) == ["the generation eval did not run at the end of the job (no scorer is set)"]
    assert findings(run_dir, Expect(generation=False)) == []


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


def test_a_run_fails_without_exit_0_and_success_with_its_failures_last_line_and_reports_the_whole_jobs_peak(tmp_path):
    history = [{"step": s, "loss": 0.5, "time": 10.0 + 0.25 * s} for s in range(1, 6)]
    metrics = {"peak_gpu_memory_mib": 1000, "job_peak_gpu_memory_mib": 1234}  # training's peak, the whole job's
    passed = write_run(tmp_path / "ok", history, metrics, success=True)
    assert outcome(passed, 0) == {"status": PASSED, "step_seconds": 0.25, "peak_gpu_mib": 1234, "peak_rss_mib": None,
                                  "error": None}
    failed = write_run(tmp_path / "failed", history[:2], failed="RuntimeError: NCCL error\nranks 1 timed out\n")
    assert outcome(failed, 1, "a log\nTraceback ...\n") == {
        "status": FAILED, "step_seconds": 0.25, "peak_gpu_mib": None, "peak_rss_mib": None,
        "error": "ranks 1 timed out"}
    # Killed before writing FAILED (or refused before the run dir existed): the command's last words.
    crashed = outcome(tmp_path / "never", 2, "starting\nerror: invalid config: method.beta=-1.0 is out of range\n\n")
    assert crashed["status"] == FAILED and crashed["error"] == "error: invalid config: method.beta=-1.0 is out of range"
    assert outcome(tmp_path / "never", -9, "")["error"] == "exited with code -9"
    unfinished = write_run(tmp_path / "unfinished", history)
    unfinished = outcome(unfinished, 0)
    assert unfinished["status"] == FAILED and "exited 0 but left no SUCCESS" in unfinished["error"]


def test_the_peak_recorded_at_the_end_of_a_cpu_job_is_its_resident_set():
    from types import SimpleNamespace

    from rlhf.cluster.devices import job_peak_memory

    peak = job_peak_memory(SimpleNamespace(accelerator="cpu"))
    assert list(peak) == ["job_peak_rss_mib"] and peak["job_peak_rss_mib"] > 50  # this Python, torch imported


def test_the_table_and_the_json_report_every_check():
    results = [
        {"name": "dpo_fp32_weights", "status": PASSED, "step_seconds": 0.1234, "peak_gpu_mib": 2048, "error": None},
        {"name": "qlora_dpo", "status": SKIPPED, "reason": "bitsandbytes is not installed (pip install bitsandbytes)"},
        {"name": "fsdp", "status": FAILED, "step_seconds": None, "peak_gpu_mib": None,
         "error": "ValueError: a | b " + "x" * 300},
        {"name": "ddp", "status": PASSED, "step_seconds": 0.5, "peak_gpu_mib": None, "peak_rss_mib": 640},
    ]
    lines = render_table(results).splitlines()
    assert lines[:2] == ["| check | result | step s | peak MiB (whole job) | note |", "|---|---|---|---|---|"]
    assert lines[2] == "| dpo_fp32_weights | passed | 0.123 | 2048 GPU |  |"
    assert lines[3] == "| qlora_dpo | skipped |  |  | bitsandbytes is not installed (pip install bitsandbytes) |"
    assert lines[4].startswith("| fsdp | failed |  |  | ValueError: a \\| b xxx") and lines[4].endswith("... |")
    assert lines[5] == "| ddp | passed | 0.500 | 640 RSS |  |"
    assert lines[-1] == "2 of 4 checks passed, 1 failed, 1 skipped"
    assert gpu_check.exit_code(results) == 1 and gpu_check.exit_code(results[:2]) == 0
    written = json.loads(json.dumps(report({"gpus": 2}, {"parameters": 76}, results)))
    assert written["summary"] == {PASSED: 2, FAILED: 1, SKIPPED: 1} and written["checks"] == results
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


def test_the_built_model_loads_back_and_so_does_an_adapter_on_it(tmp_path, start_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(start_model)
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.vocab_size == len(tokenizer)
    assert "<|im_start|>" in tokenizer.chat_template and str(model.dtype) == "torch.bfloat16"
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert found_in.loads_back(start_model) == []
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp_path / "adapter")
    assert found_in.loads_back(tmp_path / "adapter") == []


@pytest.mark.slow
def test_a_refused_config_fails_with_the_commands_own_last_line_and_a_skip_runs_nothing(tmp_path):
    bad = Check("bad_beta", "a refused config", ("method=dpo", "method.beta=-1"), "gpu", "cpu")
    result = gpu_check.run_check(Planned(bad, None), CPU, tmp_path)
    assert result["status"] == FAILED
    assert result["error"] == "error: invalid config: method.beta=-1.0 is out of range: it must be > 0"
    skipped = gpu_check.run_check(Planned(bad, "needs 2 GPUs, this machine has 0"), CPU, tmp_path)
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
                    "anywhere; --cpu runs the checks on the CPU options)"]
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
        "error: --only 'fsdpp': no check named 'fsdpp' (did you mean 'fsdp'?); the checks: dpo_fp32_weights, dpo_flash_packed, "
        "dpo_bf16_weights, lora_dpo, qlora_dpo, grpo_transformers, grpo_vllm_colocate, grpo_vllm_server, grpo_vllm_serve, ddp, fsdp, "
        "grpo_fsdp, zero2, zero3"]


@pytest.mark.slow
@pytest.mark.distributed
def test_the_cpu_plan_runs_every_check_with_a_cpu_option_and_its_findings_catch_a_broken_copy(tmp_path):
    """`python -m rlhf.gpu_check --cpu`, for real: one process, cpu_2proc and cpu_2proc_fsdp train
    the built model through rlhf.train and each run dir passes every finding. Then copies of the
    real FSDP run dir, each broken one way, fail the finding made for it."""
    proc = run_cli("rlhf.gpu_check", "--cpu", "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=900)
    written = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    by_name = {c["name"]: c for c in written["checks"]}
    assert [n for n, c in by_name.items() if c["status"] == PASSED] == list(ON_THE_CPU), proc.stdout
    assert {c["status"] for n, c in by_name.items() if n not in ON_THE_CPU} == {SKIPPED}
    assert all(by_name[n]["peak_rss_mib"] > 0 and by_name[n]["step_seconds"] > 0 for n in ON_THE_CPU)
    assert written["machine"]["cpu_plan"] and written["model"]["num_hidden_layers"] == 2
    assert "6 of 14 checks passed, 0 failed, 8 skipped" in proc.stdout
    real = tmp_path / "out" / "fsdp"
    assert json.loads((real / "metrics.json").read_text())["distributed"]["type"] == "FSDP"

    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(real, copy, ignore=shutil.ignore_patterns("checkpoints"))
        return copy

    ddp = broken("ddp_fallback")
    edit_metrics(ddp, distributed={"type": "MULTI_CPU", "processes": 2})
    assert [f.split(" (")[0] for f in findings(ddp)] == ["asked for hardware.distributed=fsdp on 2 processes"]
    unchanged = broken("unchanged")
    shutil.copy(tmp_path / "out" / MODEL_DIR / "model.safetensors", unchanged / MODEL_DIR / "model.safetensors")
    assert [f.split(" (")[0] for f in findings(unchanged)] == ["26 of 26 weights did not change from the starting model"]
    nan = broken("nan_loss")
    with open(nan / "log_history.jsonl", "a") as handle:
        handle.write(json.dumps({"step": STEPS + 1, "loss": float("nan")}) + "\n")
    assert findings(nan) == [f"1 of {STEPS + 1} logged training losses are not finite (step {STEPS + 1}: nan; "
                             "log_history.jsonl)"]
    missing = broken("missing_key")
    from safetensors.torch import load_file, save_file

    path = missing / MODEL_DIR / "model.safetensors"
    save_file({k: v for k, v in load_file(path).items() if k != "model.layers.0.self_attn.k_proj.bias"}, path,
              metadata={"format": "pt"})
    assert findings(missing) == ["the saved model does not load back as saved: missing_keys "
                                 "model.layers.0.self_attn.k_proj.bias"]
