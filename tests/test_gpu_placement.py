"""Which GPUs each process of a job sees (rlhf.cluster.devices), and the job's own vLLM server
(rlhf.cluster.vllm_server.server_for_job): decided from the config and the environment, asserted here
without a GPU."""

from __future__ import annotations

import socket
import sys
import textwrap
import time

import pytest

from rlhf.cluster import devices
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError, RlhfError


def hardware(*overrides: str):
    return validate(compose_job(["model=qwen2.5-0.5b-instruct", *overrides])).hardware


def test_a_single_process_on_a_multi_gpu_host_sees_one_gpu():
    # TRL's DPO, KTO and GRPO refuse nn.DataParallel, and ORPO/SimPO would silently use it.
    assert devices.job_gpus(hardware("hardware=gpu"), {}).train == ["0"]
    given = {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    assert devices.job_gpus(hardware("hardware=gpu"), given).train == ["0"]


def test_ranks_of_a_node_use_its_allocation():
    slurm = {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "SLURM_JOB_ID": "12"}
    gpus = devices.job_gpus(hardware("hardware=gpu_ddp_8", "hardware.gpus_per_node=4",
                                     "hardware.processes_per_node=4"), slurm)
    assert gpus.train == ["4", "5", "6", "7"] and "SLURM" in gpus.why


def test_each_job_of_a_local_parallel_sweep_gets_its_own_gpus():
    one_gpu = hardware("hardware=gpu")
    seen = []
    for job in range(4):
        env = {"SUBMITIT_EXECUTOR": "local", "CUDA_VISIBLE_DEVICES": "0",  # what submitit gives every job
               devices.HOST_GPUS: "0,1,2,3"}
        devices.note_sweep_job(env, job)
        seen.append(devices.job_gpus(one_gpu, env).train)
    assert seen == [["0"], ["1"], ["2"], ["3"]]
    two_gpus = hardware("hardware=gpu", "hardware.gpus_per_node=2", "hardware.processes_per_node=2",
                        "hardware.distributed=ddp")
    env = {"SUBMITIT_EXECUTOR": "local", devices.JOB_NUM: "1", devices.HOST_GPUS: "0,1,2,3"}
    assert devices.job_gpus(two_gpus, env).train == ["2", "3"]
    # More jobs than slices: said, not hidden.
    env = {"SUBMITIT_EXECUTOR": "local", devices.JOB_NUM: "5", devices.HOST_GPUS: "0,1,2,3"}
    late = devices.job_gpus(one_gpu, env)
    assert late.train == ["1"] and "shares them with job 1" in late.why
    # Without the shell's list, the driver's count is the host.
    env = {"SUBMITIT_EXECUTOR": "local", devices.JOB_NUM: "2", "CUDA_VISIBLE_DEVICES": "0"}
    assert devices.job_gpus(one_gpu, env, count_host=lambda: 4).train == ["2"]


def test_the_vllm_gpus_are_taken_from_training_without_train_gpus():
    served = hardware("hardware=gpu_vllm", "hardware.train_gpus=null")
    assert devices.job_gpus(served, {}) == devices.JobGpus(["0"], ["1"], devices.job_gpus(served, {}).why)
    allocated = devices.job_gpus(served, {"CUDA_VISIBLE_DEVICES": "6,7"})
    assert (allocated.train, allocated.vllm) == (["6"], ["7"])


def test_the_decision_is_inherited_by_the_ranks_not_applied_twice():
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    chosen = devices.decide(hardware("hardware=gpu_vllm"), env)  # train_gpus=[0], vllm_gpus=[1]
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and (chosen.train, chosen.vllm) == (["2"], ["3"])
    rank = dict(env)  # torchrun copies the environment
    again = devices.job_gpus(hardware("hardware=gpu_vllm"), rank)
    assert (again.train, again.vllm) == (["2"], ["3"])
    assert devices.decide(hardware("hardware=cpu"), {}) is None


def test_gpu_positions_outside_the_job_are_config_errors():
    with pytest.raises(ConfigError, match=r"hardware.vllm_gpus=\[2\]: position\(s\) \[2\] are outside .* \(0 to 1\)"):
        hardware("hardware=gpu_vllm", "hardware.vllm_gpus=[2]")
    with pytest.raises(ConfigError, match="processes_per_node=8 training processes need a GPU each.*leaves 7"):
        hardware("hardware=gpu_ddp_8", "hardware.vllm_gpus=[7]")
    with pytest.raises(RlhfError, match="outside the 1 GPU"):  # an allocation smaller than the config
        devices.job_gpus(hardware("hardware=gpu_vllm"), {"CUDA_VISIBLE_DEVICES": "5"})


# ---------------------------------------------------------------------------- vLLM's memory share

GRPO_VLLM = ["method=grpo", "model=qwen2.5-0.5b-instruct", "hardware=gpu_vllm", "method.use_vllm=true"]


def test_colocated_vllm_takes_trls_share_and_a_server_its_gpus():
    from rlhf.cluster.vllm_server import server_command

    def share(*extra):
        run = validate(compose_job([*GRPO_VLLM, *extra]))
        return run.spec.run_trl(run)["vllm_gpu_memory_utilization"]

    from trl import GRPOConfig

    assert share("method.vllm_mode=colocate") == GRPOConfig.__dataclass_fields__["vllm_gpu_memory_utilization"].default
    assert share("method.vllm_mode=colocate") == 0.3
    assert share("method.vllm_mode=colocate", "vllm.gpu_memory_utilization=0.5") == 0.5
    command, _ = server_command(validate(compose_job(GRPO_VLLM)))
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.9"


# ---------------------------------------------------------------------------- the job's own server

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stub_server(port: int, delay: float = 0.5) -> list[str]:
    """Stands in for `vllm serve`: answers /health after a start-up delay, and writes its pid."""
    code = textwrap.dedent(f"""
        import http.server, time
        time.sleep({delay})
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/health" else 404); self.end_headers()
            def log_message(self, *a): pass
        print("stub vllm serving", flush=True)
        http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
    """)
    return [sys.executable, "-c", code]


def served_run(port: int, *extra: str):
    return validate(compose_job([*GRPO_VLLM, f"vllm.port={port}", "vllm.server_timeout=30", *extra]))


def test_a_server_mode_job_runs_its_own_server_and_stops_it(tmp_path):
    from rlhf.cluster.vllm_server import SERVER_LOG, answers, server_for_job

    port = free_port()
    run = served_run(port)
    with server_for_job(run, tmp_path, command=stub_server(port), env=None) as process:
        assert process is not None and answers(f"http://127.0.0.1:{port}/health")
    assert process.poll() is not None  # stopped with the block
    assert "stub vllm serving" in (tmp_path / SERVER_LOG).read_text()
    time.sleep(0.2)
    assert not answers(f"http://127.0.0.1:{port}/health")


def test_the_job_starts_no_server_where_it_should_not(tmp_path, monkeypatch):
    from rlhf.cluster.vllm_server import job_starts_server, server_for_job

    port = free_port()
    assert job_starts_server(served_run(port))
    assert not job_starts_server(served_run(port, "method.vllm_mode=colocate"))
    assert not job_starts_server(served_run(port, "vllm.host=vllm-node-3"))  # a server elsewhere
    assert not job_starts_server(served_run(port, "hardware.vllm_gpus=null", "hardware.train_gpus=null"))
    monkeypatch.setenv("RANK", "1")
    with server_for_job(served_run(port), tmp_path, command=stub_server(port)) as process:
        assert process is None
    monkeypatch.setenv("RANK", "0")
    with server_for_job(served_run(port), tmp_path, command=stub_server(port, delay=0)) as first:
        with server_for_job(served_run(port), tmp_path, command=stub_server(port)) as second:
            assert first is not None and second is None  # one already answers: used, not doubled


def test_a_server_that_dies_is_one_error_naming_its_log(tmp_path):
    from rlhf.cluster.vllm_server import server_for_job

    port = free_port()
    with pytest.raises(RlhfError, match=r"exited with code 3 .*vllm_server\.log"):
        with server_for_job(served_run(port), tmp_path, command=[sys.executable, "-c", "raise SystemExit(3)"]):
            pytest.fail("the block must not run without a server")
