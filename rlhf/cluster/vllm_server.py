"""The vLLM server GRPO-family methods generate with (method.use_vllm=true,
method.vllm_mode=server): the composed model, on the GPUs `hardware.vllm_gpus` names (disjoint
from the training GPUs), with the root `vllm` block's host, port, tensor parallelism, memory
share, dtype and context length. The command line is TRL's own
(`trl.scripts.vllm_serve.build_command`), so the server speaks the weight-sync protocol TRL's
trainer expects.

`python -m rlhf.vllm_serve <overrides>` starts one in the foreground (rlhf/vllm_serve.py), at
vllm.port. A job in server mode whose `hardware.vllm_gpus` is set and whose server is on its
own node (vllm.host local) starts the server itself (`server_for_job`), on its own vLLM GPUs,
and stops it when training ends: that is how `hardware=gpu_vllm` runs as a SLURM job, where no
second shell exists. Such a job-owned server gets ports of its own: two free ports of the node,
chosen by the job, for the server's HTTP port and TRL's weight-sync group, so two jobs on one
node (a SLURM array's tasks) never share or collide on a server. The one server a job uses
without starting it is one answering at the configured vllm.port that serves the job's own
model: a `python -m rlhf.vllm_serve` started by hand with the same overrides.

The start-up budget (vllm.server_timeout) counts from the server's start, after the model's
files are in the local hub cache (`fetch_model`): `vllm serve` downloads a hub model itself
before it loads it, which on a cold node can take longer than the whole budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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

# The files of a hub model fetched before its server starts: what vLLM's default loader reads
# (vllm/model_executor/model_loader/default_loader.py: safetensors weights, outside original/)
# and the config and tokenizer files it and the training process read. Whatever else vLLM
# wants is small and is downloaded by the server itself, within its budget.
SERVED_FILES = ["*.safetensors", "*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
NOT_SERVED = ["original/*", "original/**/*"]


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


def fetch_model(run: Any) -> None:
    """The served model's files in the local hub cache (SERVED_FILES), before the server starts,
    so that its start-up budget is spent loading, not downloading. Nothing to do for a local
    directory, or when the hub cannot be reached (rlhf.core.hub: the cache holds it, or the
    server fails at once)."""
    name = run.model.name_or_path
    if Path(name).expanduser().exists():
        return
    from rlhf.core import hub

    state = hub.state()
    if not state.online:
        log.info("not fetching %s for the vLLM server: %s", name, state.why)
        return
    from huggingface_hub import snapshot_download

    started = time.monotonic()
    log.info("fetching %s for the vLLM server (its start-up budget, vllm.server_timeout, starts after)", name)
    try:
        snapshot_download(name, revision=run.model.revision, allow_patterns=SERVED_FILES, ignore_patterns=NOT_SERVED)
    except (OSError, ValueError) as error:  # huggingface_hub's errors are OSErrors; a bad id a ValueError
        raise RlhfError(hub.failure("model", name, "Set model.name_or_path to a model the vLLM server can load",
                                    error, state, revision=run.model.revision,
                                    revision_key="model.revision")) from None
    log.info("%s is in the local hub cache after %.0f s", name, time.monotonic() - started)


def base_url(run: Any) -> str:
    host = "127.0.0.1" if run.vllm.host in ("0.0.0.0", "::") else run.vllm.host
    return f"http://{host}:{run.vllm.port}"


def health_url(run: Any) -> str:
    return f"{base_url(run)}/health"


def wait_healthy(url: str, timeout: float, process: subprocess.Popen | None = None,
                 interval: float = 2.0) -> float:
    """Seconds until `url` answers 200; an error if the server exits or the timeout passes."""
    started = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RlhfError(f"the vLLM server exited with code {process.returncode} before it was healthy")
        if answers(url, timeout=5):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RlhfError(f"the vLLM server did not answer {url} within {timeout:.0f} s of its start "
                            "(vllm.server_timeout; the model was fetched before); its log is above")
        time.sleep(interval)


def job_starts_server(run: Any) -> bool:
    """Whether the job itself runs its vLLM server: server mode, the vLLM GPUs named, and the
    server on this node."""
    method = run.method
    return (bool(getattr(method, "use_vllm", False)) and getattr(method, "vllm_mode", None) == "server"
            and run.hardware.vllm_gpus is not None and run.vllm.host in LOCAL_HOSTS)


def answers(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def served_models(url: str) -> list[str] | None:
    """The models a server at `url` (its base) serves, by vLLM's OpenAI endpoint /v1/models
    (each model's id and root: the name or path `vllm serve` was given); None when nothing
    answers there as a vLLM server does."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
            listed = json.loads(response.read().decode("utf-8")).get("data", [])
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, AttributeError):
        return None
    return sorted({str(m.get(key)) for m in listed if isinstance(m, dict) for key in ("id", "root") if m.get(key)})


def own_ports() -> tuple[int, int]:
    """Two distinct ports free on this node, for a job-owned server's HTTP port and TRL's weight
    sync group (bound together, so they differ)."""
    with socket.socket() as http, socket.socket() as group:
        http.bind(("127.0.0.1", 0))
        group.bind(("127.0.0.1", 0))
        return http.getsockname()[1], group.getsockname()[1]


def started_by_hand(run: Any) -> bool:
    """Whether a server answering at the configured vllm.host:vllm.port serves this run's model
    (`python -m rlhf.vllm_serve` with the same overrides, in another shell): the job uses it.
    A server there serving another model is not the job's: it starts its own, and says so."""
    served = served_models(base_url(run))
    if served is None:
        return False
    if run.model.name_or_path in served:
        log.info("a vLLM server serving %s already answers at %s: training uses it, the job starts none",
                 run.model.name_or_path, base_url(run))
        return True
    log.info("the vLLM server at %s serves %s, not %s: the job starts its own, on ports of its own",
             base_url(run), ", ".join(served) or "no model", run.model.name_or_path)
    return False


@contextlib.contextmanager
def server_for_job(run: Any, run_dir: Path,
                   serve: Callable[[Any], tuple[list[str], dict[str, str] | None]] | None = None,
                   fetch: Callable[[Any], None] = fetch_model) -> Iterator[subprocess.Popen | None]:
    """The job's own vLLM server while the block runs (see the module doc), started by global
    rank 0 only, its output in `<run_dir>/vllm_server.log`; stopped (its whole process group)
    when the block ends, however it ends. Yields the server process, or None when the job does
    not start one (another mode or host, another rank, or a server of this model started by hand).

    The server's ports are the job's own (`own_ports`), set on `run.vllm` (port, group_port)
    for the block, so that the TRL config built from `run` inside it talks to this server and
    no other; rank 0's is the only TRL config that uses them (TRL's vLLM client lives on the
    main process). The order: the model is fetched (`fetch`), then the server starts (`serve`
    builds its command from the run with its ports: `server_command` unless a test stands in),
    then its start-up budget, vllm.server_timeout, counts."""
    if not job_starts_server(run) or int(os.environ.get("RANK", "0")) != 0 or started_by_hand(run):
        yield None
        return
    if serve is None:
        require_vllm()
        serve = server_command
    configured = run.vllm
    port, group_port = own_ports()
    run.vllm = dataclasses.replace(configured, port=port, group_port=group_port)
    try:
        fetch(run)
        with start_server(run, run_dir, *serve(run)) as process:
            yield process
    finally:
        run.vllm = configured


@contextlib.contextmanager
def start_server(run: Any, run_dir: Path, command: list[str],
                 env: dict[str, str] | None) -> Iterator[subprocess.Popen]:
    """`command` started in a session of its own, its output appended to the run dir's server
    log; waited for (vllm.server_timeout from now) and stopped when the block ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / SERVER_LOG, "ab") as output:
        log.info("starting the job's vLLM server on GPUs %s, port %d (weight sync: %d; log: %s): %s",
                 (env or {}).get("CUDA_VISIBLE_DEVICES", "?"), run.vllm.port, run.vllm.group_port,
                 run_dir / SERVER_LOG, " ".join(command))
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            seconds = wait_healthy(health_url(run), run.vllm.server_timeout, process)
        except RlhfError as error:
            raise RlhfError(f"{error} (the job's own server; its log: {run_dir / SERVER_LOG})") from None
        log.info("the job's vLLM server answers at %s after %.0f s", base_url(run), seconds)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen | None, grace: float = 30.0) -> None:
    """Terminate a process started in a session of its own and every process of its group (the
    vLLM engine's workers, torchrun's ranks), then reap it. The group is signalled even when its
    leader has exited already: the processes it started may still run. SIGTERM first, SIGKILL
    for what is left after `grace` seconds."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # no process of the group is left
        if group_gone(process, wait):
            break
    if process.poll() is None:  # not the leader of a group of its own
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def group_gone(process: subprocess.Popen, timeout: float) -> bool:
    """Whether every process of `process`'s group has ended within `timeout` seconds (the leader
    is reaped meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        if not group_alive(process.pid):
            return True
        time.sleep(0.1)
    return False


def group_alive(pgid: int) -> bool:
    """Whether a process of the group `pgid` still runs. On Linux from /proc, where an exited
    member its parent has not reaped (a zombie: in a container whose first process does not reap
    orphans, forever) does not count; elsewhere, whether the group can be signalled."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue  # ended while listed
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
