"""The vLLM server GRPO-family methods generate with (method.use_vllm=true,
method.vllm_mode=server): the composed model, on the GPUs `hardware.vllm_gpus` names (disjoint
from the training GPUs), with the root `vllm` block's host, port, tensor parallelism, memory
share, dtype and context length. The command line is TRL's own
(`trl.scripts.vllm_serve.build_command`), so the server speaks the weight-sync protocol TRL's
trainer expects.

`python -m rlhf.vllm_serve <overrides>` starts one in the foreground (rlhf/vllm_serve.py). A job
in server mode whose `hardware.vllm_gpus` is set and whose server is on its own node (vllm.host
local) starts the server itself when none answers there (`server_for_job`), on its own vLLM
GPUs, and stops it when training ends: that is how `hardware=gpu_vllm` runs as a SLURM job,
where no second shell exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.cluster import devices
from rlhf.core.errors import ConfigError, RlhfError
from rlhf.methods.online import memory_share
from rlhf.run.files import SERVER_LOG

log = logging.getLogger("rlhf")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1")

MISSING_VLLM = ("vLLM is not installed in this environment: install the extra with "
                "`pip install -e '.[vllm]'` on a machine with CUDA GPUs (vLLM has no CPU build here)")


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise RlhfError(MISSING_VLLM)


def server_command(run: Any, environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The server's argv and the environment it needs, for a validated run: its GPUs are the
    job's GPUs at the positions hardware.vllm_gpus names (rlhf.cluster.devices)."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    if run.hardware.vllm_gpus is None:
        raise ConfigError("hardware.vllm_gpus is not set: name the GPUs the vLLM server uses (e.g. [0]), "
                          "disjoint from hardware.train_gpus")
    vllm = run.vllm
    if len(run.hardware.vllm_gpus) % vllm.tensor_parallel_size:
        raise ConfigError(f"vllm.tensor_parallel_size={vllm.tensor_parallel_size} does not divide the "
                          f"{len(run.hardware.vllm_gpus)} GPUs of hardware.vllm_gpus={list(run.hardware.vllm_gpus)}")
    arguments = ScriptArguments(
        model=run.model.name_or_path,
        revision=run.model.revision,
        tensor_parallel_size=vllm.tensor_parallel_size,
        data_parallel_size=len(run.hardware.vllm_gpus) // vllm.tensor_parallel_size,
        host=vllm.host,
        port=vllm.port,
        gpu_memory_utilization=memory_share(vllm, "server"),
        dtype=vllm.dtype,
        max_model_len=vllm.max_model_len,
        enable_prefix_caching=vllm.enable_prefix_caching,
        trust_remote_code=run.model.trust_remote_code,
    )
    env = dict(os.environ if environ is None else environ)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices.job_gpus(run.hardware, env).vllm)
    env["VLLM_SERVER_DEV_MODE"] = "1"  # TRL's weight-transfer endpoints live behind it
    return build_command(arguments), env


def health_url(run: Any) -> str:
    host = "127.0.0.1" if run.vllm.host in ("0.0.0.0", "::") else run.vllm.host
    return f"http://{host}:{run.vllm.port}/health"


def wait_healthy(url: str, timeout: float, process: subprocess.Popen | None = None,
                 interval: float = 2.0) -> float:
    """Seconds until `url` answers 200; an error if the server exits or the timeout passes."""
    started = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RlhfError(f"the vLLM server exited with code {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise RlhfError(f"the vLLM server did not answer {url} within {timeout:.0f} s "
                            "(vllm.server_timeout); its log is above")
        time.sleep(interval)


def job_starts_server(run: Any) -> bool:
    """Whether the job itself runs its vLLM server: server mode, the vLLM GPUs named, and the
    server on this node."""
    method = run.method
    return (bool(getattr(method, "use_vllm", False)) and getattr(method, "vllm_mode", None) == "server"
            and run.hardware.vllm_gpus is not None and run.vllm.host in LOCAL_HOSTS)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@contextlib.contextmanager
def server_for_job(run: Any, run_dir: Path, command: list[str] | None = None,
                   env: dict[str, str] | None = None) -> Iterator[subprocess.Popen | None]:
    """The job's own vLLM server while the block runs (see the module doc), started by global
    rank 0 only, its output in `<run_dir>/vllm_server.log`; stopped (its whole process group)
    when the block ends, however it ends. Yields the server process, or None when the job does
    not start one (another mode or host, another rank, or a server already answering)."""
    if not job_starts_server(run) or int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    url = health_url(run)
    if answers(url):
        log.info("a vLLM server already answers at %s: training uses it", url)
        yield None
        return
    if command is None:
        require_vllm()
        command, env = server_command(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / SERVER_LOG, "ab") as output:
        log.info("starting the job's vLLM server on GPUs %s (log: %s): %s", env.get("CUDA_VISIBLE_DEVICES") if env
                 else "?", run_dir / SERVER_LOG, " ".join(command))
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            seconds = wait_healthy(url, run.vllm.server_timeout, process)
        except RlhfError as error:
            raise RlhfError(f"{error} (the job's own server; its log: {run_dir / SERVER_LOG})") from None
        log.info("the job's vLLM server answers at %s after %.0f s", url, seconds)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    """Terminate the server and every process it started (its session), then wait for it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
