"""Our side of the vLLM seam: the server command we build, the TRL fields we set, and the
error when vLLM is missing (shown with vLLM hidden, so the test holds where it is installed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys

import pytest

from conftest import cli_env
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError, RlhfError
from rlhf.launch.compose import compose_job

GPU_GRPO = ["method=grpo", "model=qwen2.5-0.5b-instruct", "hardware=gpu_vllm", "method.use_vllm=true",
            "vllm.port=8123", "vllm.tensor_parallel_size=1", "vllm.gpu_memory_utilization=0.7",
            "vllm.dtype=bfloat16", "vllm.max_model_len=4096"]


def gpu_run(*extra: str):
    """A validated GPU config, as it validates on a GPU machine (no CUDA check is involved)."""
    return validate(compose_job([*GPU_GRPO, *extra]))


def test_server_command_serves_the_composed_model_on_the_vllm_gpus():
    from rlhf.cluster.vllm_server import health_url, server_command

    command, env = server_command(gpu_run())
    assert command[command.index("serve") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
    flags = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i].startswith("--")}
    assert flags["--port"] == "8123" and flags["--host"] == "127.0.0.1"
    assert flags["--tensor-parallel-size"] == "1" and flags["--data-parallel-size"] == "1"
    assert flags["--gpu-memory-utilization"] == "0.7" and flags["--dtype"] == "bfloat16"
    assert flags["--max-model-len"] == "4096"
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["VLLM_SERVER_DEV_MODE"] == "1"
    assert health_url(gpu_run()) == "http://127.0.0.1:8123/health"


def test_grpo_trl_config_gets_the_vllm_fields():
    run = gpu_run("method.vllm_mode=server")
    kwargs = {**run.spec.trl_kwargs(run.method, has_eval=False), **run.spec.run_trl(run)}
    assert kwargs["use_vllm"] is True and kwargs["vllm_mode"] == "server"
    assert (kwargs["vllm_server_port"], kwargs["vllm_server_host"]) == (8123, "127.0.0.1")
    assert kwargs["vllm_gpu_memory_utilization"] == 0.7 and kwargs["vllm_max_model_length"] == 4096
    assert kwargs["vllm_tensor_parallel_size"] == 1
    # Every key is a real GRPOConfig field: nothing is silently dropped or misspelled.
    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(kwargs) <= fields, set(kwargs) - fields
    colocate = gpu_run("method.vllm_mode=colocate")
    assert colocate.spec.trl_kwargs(colocate.method, False)["vllm_mode"] == "colocate"


@pytest.mark.parametrize("method", ["rloo", "online_dpo"])
def test_each_online_method_gets_the_vllm_fields_its_trl_config_has(method):
    from rlhf.core.usercode import import_object

    run = validate(compose_job([f"method={method}", *GPU_GRPO[1:], "method.vllm_mode=colocate"]))
    kwargs = {**run.spec.trl_kwargs(run.method, has_eval=False), **run.spec.run_trl(run)}
    assert kwargs["use_vllm"] is True and kwargs["vllm_mode"] == "colocate"
    assert kwargs["vllm_server_port"] == 8123 and kwargs["vllm_gpu_memory_utilization"] == 0.7
    fields = {f.name for f in dataclasses.fields(import_object(run.spec.trl_config))}
    assert set(kwargs) <= fields, set(kwargs) - fields


def test_vllm_and_training_gpus_must_be_disjoint():
    with pytest.raises(ConfigError, match=r"GPUs \[1\] are in both hardware.train_gpus"):
        gpu_run("hardware.train_gpus=[0,1]")


def test_use_vllm_on_cpu_is_refused_at_validation():
    with pytest.raises(ConfigError, match="needs GPUs"):
        validate(compose_job(["method=grpo", "method.use_vllm=true"]))


# Runs `python -m rlhf.vllm_serve` in an interpreter where vLLM cannot be found, installed or not.
WITHOUT_VLLM = ("import importlib.util as u, runpy, sys\n"
                "found = u.find_spec\n"
                "u.find_spec = lambda name, *a, **k: None if name == 'vllm' else found(name, *a, **k)\n"
                "sys.argv = ['rlhf.vllm_serve', *sys.argv[1:]]\n"
                "runpy.run_module('rlhf.vllm_serve', run_name='__main__')\n")


def test_missing_vllm_is_one_clear_message(tmp_path, monkeypatch):
    from rlhf.cluster import vllm_server

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "vllm" else found(name, *a, **k))
    with pytest.raises(RlhfError, match=r"pip install -e '\.\[vllm\]'"):
        vllm_server.require_vllm()
    proc = subprocess.run([sys.executable, "-c", WITHOUT_VLLM, *GPU_GRPO], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "vLLM is not installed" in proc.stderr and ".[vllm]" in proc.stderr


def test_health_wait_gives_up_with_a_clear_error():
    from rlhf.cluster.vllm_server import wait_healthy

    with pytest.raises(RlhfError, match="did not answer http://127.0.0.1:9/health within 1 s"):
        wait_healthy("http://127.0.0.1:9/health", timeout=1, interval=0.2)
