"""Which GPUs each process of a job sees (rlhf.cluster.devices), and the job's own vLLM server
(rlhf.cluster.vllm_server.server_for_job): decided from the config and the environment, asserted here
without a GPU."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path

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


def stub_server(port: int, delay: float = 0.5, model: str = "Qwen/Qwen2.5-0.5B-Instruct") -> list[str]:
    """Stands in for `vllm serve <model> --port <port>`: answers /health after a start-up delay
    and lists `model` at /v1/models, as vLLM's OpenAI server does."""
    code = textwrap.dedent(f"""
        import http.server, json, time
        time.sleep({delay})
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({{"data": [{{"id": {model!r}, "root": {model!r}}}]}}).encode()
                known = self.path in ("/health", "/v1/models")
                self.send_response(200 if known else 404); self.end_headers()
                if self.path == "/v1/models":
                    self.wfile.write(body)
            def log_message(self, *a): pass
        print("stub vllm serving on", {port}, flush=True)
        http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
    """)
    return [sys.executable, "-c", code]


def stub_serve(delay: float = 0.5, calls: list | None = None):
    """A `serve` for server_for_job: the stand-in server on the ports the job chose."""
    def serve(run):
        if calls is not None:
            calls.append(("serve", run.vllm.port, run.vllm.group_port, time.monotonic()))
        return stub_server(run.vllm.port, delay), None
    return serve


def no_fetch(run) -> None:
    """The model is 'in the cache' at once (no hub here)."""


def served_run(port: int = 8000, *extra: str):
    return validate(compose_job([*GRPO_VLLM, f"vllm.port={port}", "vllm.server_timeout=30", *extra]))


def test_a_server_mode_job_runs_its_own_server_on_ports_of_its_own_and_stops_it(tmp_path):
    """The ports the job chose reach both the server and TRL's vllm_server_port/vllm_group_port,
    never the configured defaults, and are the configured ones again after the block."""
    from rlhf.cluster.vllm_server import SERVER_LOG, answers, server_for_job

    run = served_run()  # vllm.port=8000, vllm.group_port=51216: what every gpu_vllm job is configured with
    with server_for_job(run, tmp_path, serve=stub_serve(), fetch=no_fetch) as process:
        port, group_port = run.vllm.port, run.vllm.group_port
        assert process is not None and answers(f"http://127.0.0.1:{port}/health")
        assert len({port, group_port, 8000, 51216}) == 4
        trl = run.spec.run_trl(run)  # the TRL config the job builds inside the block
        assert (trl["vllm_server_port"], trl["vllm_group_port"]) == (port, group_port)
    assert process.poll() is not None  # stopped with the block
    assert f"stub vllm serving on {port}" in (tmp_path / SERVER_LOG).read_text()
    assert (run.vllm.port, run.vllm.group_port) == (8000, 51216)
    time.sleep(0.2)
    assert not answers(f"http://127.0.0.1:{port}/health")


def test_two_jobs_on_one_node_each_run_their_own_server(tmp_path):
    """Two tasks of a SLURM array on one node, configured alike: each starts and uses its own
    server, on ports of its own (before, the second used the first's server, or both bound 8000)."""
    from rlhf.cluster.vllm_server import answers, served_models, server_for_job

    first_run, second_run = served_run(), served_run()
    with server_for_job(first_run, tmp_path / "a", serve=stub_serve(delay=0), fetch=no_fetch) as first:
        with server_for_job(second_run, tmp_path / "b", serve=stub_serve(), fetch=no_fetch) as second:
            assert first is not None and second is not None and first.pid != second.pid
            ports = {first_run.vllm.port, first_run.vllm.group_port, second_run.vllm.port,
                     second_run.vllm.group_port}
            assert len(ports) == 4 and not ports & {8000, 51216}
            for run in (first_run, second_run):
                assert answers(f"http://127.0.0.1:{run.vllm.port}/health")
                assert served_models(f"http://127.0.0.1:{run.vllm.port}") == ["Qwen/Qwen2.5-0.5B-Instruct"]


def test_the_model_is_fetched_before_the_server_starts_and_its_budget_counts_from_its_start(tmp_path):
    """A download longer than vllm.server_timeout (a first 7B run on a cold node) does not time
    the server out: fetch, then the server, then the budget."""
    from rlhf.cluster.vllm_server import server_for_job

    calls: list = []

    def slow_fetch(run):
        calls.append(("fetch", run.vllm.port, run.vllm.group_port, time.monotonic()))
        time.sleep(3)

    run = served_run(8000, "vllm.server_timeout=2")
    with server_for_job(run, tmp_path, serve=stub_serve(delay=0.5, calls=calls), fetch=slow_fetch) as process:
        assert process is not None
    assert [c[0] for c in calls] == ["fetch", "serve"]
    assert calls[0][1:3] == calls[1][1:3]  # the job's own ports were chosen before either
    assert calls[1][3] - calls[0][3] >= 3  # the server started after the download


def test_fetch_model_downloads_what_the_server_loads_from_the_hub_and_nothing_for_a_directory(tmp_path, monkeypatch):
    import huggingface_hub

    from rlhf.cluster import vllm_server
    from rlhf.core import hub

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda name, **kw: fetched.append((name, kw)))
    monkeypatch.setattr(hub._Probed, "state", hub.HubState(True))
    vllm_server.fetch_model(served_run(8000, "model.revision=abc123"))
    [(name, kwargs)] = fetched
    assert name == "Qwen/Qwen2.5-0.5B-Instruct" and kwargs["revision"] == "abc123"
    assert "*.safetensors" in kwargs["allow_patterns"] and "*.json" in kwargs["allow_patterns"]
    assert "original/**/*" in kwargs["ignore_patterns"]  # a second copy of the weights some repos ship
    vllm_server.fetch_model(served_run(8000, f"model.name_or_path={tmp_path}"))
    monkeypatch.setattr(hub._Probed, "state", hub.HubState(False, "HF_HUB_OFFLINE=1 is set"))
    vllm_server.fetch_model(served_run())
    assert len(fetched) == 1

    def refused(name, **kwargs):
        raise OSError("401 Client Error: Unauthorized")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refused)
    monkeypatch.setattr(hub._Probed, "state", hub.HubState(True))
    with pytest.raises(RlhfError, match=r"^cannot load the model 'Qwen/Qwen2.5-0.5B-Instruct': 401 Client Error: "
                                        r"Unauthorized\. Set model.name_or_path to a model the vLLM server can load$"):
        vllm_server.fetch_model(served_run())


def test_the_job_starts_no_server_where_it_should_not(tmp_path, monkeypatch):
    from rlhf.cluster.vllm_server import job_starts_server, server_for_job

    port = free_port()
    assert job_starts_server(served_run(port))
    assert not job_starts_server(served_run(port, "method.vllm_mode=colocate"))
    assert not job_starts_server(served_run(port, "vllm.host=vllm-node-3"))  # a server elsewhere
    assert not job_starts_server(served_run(port, "hardware.vllm_gpus=null", "hardware.train_gpus=null"))
    monkeypatch.setenv("RANK", "1")
    with server_for_job(served_run(port), tmp_path, serve=stub_serve(), fetch=no_fetch) as process:
        assert process is None


def test_a_server_started_by_hand_for_this_model_is_used_and_one_of_another_model_is_not(tmp_path):
    """`python -m rlhf.vllm_serve` with the same overrides in another shell, at vllm.port: the
    job uses it. Whatever else answers there is not the job's server: it starts its own."""
    import subprocess

    from rlhf.cluster.vllm_server import server_for_job, stop

    port = free_port()
    by_hand = subprocess.Popen(stub_server(port, delay=0), start_new_session=True)
    try:
        run = served_run(port)
        time.sleep(1.5)
        with server_for_job(run, tmp_path, serve=stub_serve(), fetch=no_fetch) as process:
            assert process is None and run.vllm.port == port  # the one started by hand
        other = served_run(port, "model.name_or_path=someone/else")
        with server_for_job(other, tmp_path, serve=stub_serve(), fetch=no_fetch) as process:
            assert process is not None and other.vllm.port != port
    finally:
        stop(by_hand)


def test_a_server_that_dies_is_one_error_naming_its_log(tmp_path):
    from rlhf.cluster.vllm_server import server_for_job

    def dies(run):
        return [sys.executable, "-c", "raise SystemExit(3)"], None

    with pytest.raises(RlhfError, match=r"exited with code 3 .*vllm_server\.log"):
        with server_for_job(served_run(), tmp_path, serve=dies, fetch=no_fetch):
            pytest.fail("the block must not run without a server")


def test_stopping_a_server_ends_what_it_started_even_after_it_exited(tmp_path):
    """vLLM's engine processes are children of the server: when the server itself has exited,
    its process group is still stopped (before, stop() returned once the leader was gone)."""
    import subprocess

    from rlhf.cluster.vllm_server import group_alive, stop

    leader = subprocess.Popen(["bash", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    child = int(leader.stdout.readline())
    leader.wait(timeout=10)
    assert group_alive(leader.pid)  # the leader exited, its child runs on
    started = time.monotonic()
    stop(leader, grace=10)
    assert not group_alive(leader.pid) and time.monotonic() - started < 10
    state = (Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
             if Path(f"/proc/{child}/stat").exists() else "gone")
    assert state in ("Z", "gone")  # ended (a zombie until something reaps it)
