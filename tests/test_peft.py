"""PEFT: with an adapter the reference is the base model with the adapter switched off (no
second model in memory), unless peft.rl_adapter_ref_model asks for a separate one."""

from __future__ import annotations

import json

import pytest

from conftest import train

pytestmark = pytest.mark.slow


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_lora_dpo_keeps_no_second_model_in_memory(tmp_path):
    run_dir = tmp_path / "lora"
    train(tmp_path, "peft=lora", "method.precompute_ref_log_probs=false", "method.max_steps=4", run_dir=run_dir)
    reference = _metrics(run_dir)["reference"]
    assert reference["kind"] == "adapter_disabled" and reference["models_in_memory"] == 1
    assert (run_dir / "model" / "adapter_config.json").is_file()  # the adapter is what was saved


def test_rl_adapter_ref_model_loads_a_separate_reference(tmp_path):
    run_dir = tmp_path / "separate"
    train(tmp_path, "peft=lora", "peft.rl_adapter_ref_model=true", "method.precompute_ref_log_probs=false",
          "method.max_steps=4", run_dir=run_dir)
    reference = _metrics(run_dir)["reference"]
    assert reference["kind"] == "separate_copy" and reference["models_in_memory"] == 2


def test_a_lora_target_module_typo_names_the_model_layers(tmp_path):
    proc = train(tmp_path, "peft=lora", "peft.target_modules=[q_projj,v_proj]", run_dir=tmp_path / "run", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "peft.target_modules: 'q_projj' matches no module of" in proc.stderr
    assert "did you mean 'q_proj'?" in proc.stderr and "its linear layers are down_proj, gate_proj" in proc.stderr


@pytest.mark.parametrize("method", ["rloo", "online_dpo"])
def test_lora_online_methods_compare_against_the_adapter_disabled_policy(tmp_path, method):
    """RLOO (beta > 0: its trainer would otherwise build a copy) and Online DPO (the platform
    would load one) hold one model: the reference is the policy with its adapter disabled."""
    run_dir = tmp_path / method
    train(tmp_path, f"method={method}", "peft=lora", "method.max_steps=2", "evaluate.enabled=false",
          run_dir=run_dir)
    metrics = _metrics(run_dir)
    assert metrics["reference"]["kind"] == "adapter_disabled" and metrics["reference"]["models_in_memory"] == 1
    assert (run_dir / "model" / "adapter_config.json").is_file()
