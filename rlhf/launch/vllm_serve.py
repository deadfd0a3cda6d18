"""python -m rlhf.vllm_serve <same overrides as train>

Starts the vLLM server GRPO generates with (method.use_vllm=true, method.vllm_mode=server):
the composed model, on the GPUs `hardware.vllm_gpus` names (disjoint from the training
GPUs), with the root `vllm` block's host, port, tensor parallelism, memory share, dtype and
context length. The command line is TRL's own (`trl.scripts.vllm_serve.build_command`), so
the server speaks the weight-sync protocol TRL's trainer expects. It waits for the server's
health endpoint, then stays in the foreground until the server exits (Ctrl-C stops both).

Train against it from another shell with the same overrides:
    python -m rlhf.vllm_serve method=grpo model=qwen2.5-0.5b-instruct hardware=gpu_vllm
    python -m rlhf.train     method=grpo model=qwen2.5-0.5b-instruct hardware=gpu_vllm method.use_vllm=true

A job can also start its own server (rlhf.cluster.vllm_server.server_for_job).
"""

from __future__ import annotations

import subprocess
import sys

from rlhf.cluster.vllm_server import fetch_model, health_url, require_vllm, server_command, wait_healthy
from rlhf.core.errors import RlhfError


def main() -> None:
    """Compose and validate the overrides, fetch a hub model into the local cache, start the
    server, wait until it is healthy (vllm.server_timeout from its start), and stay in the
    foreground until it exits (Ctrl-C stops both)."""
    from rlhf.config.validate import validate
    from rlhf.launch.compose import compose_job

    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        run = validate(compose_job(overrides))
        command, env = server_command(run)
        require_vllm()
        fetch_model(run)  # before the start-up budget (vllm.server_timeout) starts
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print("starting: " + " ".join(command), file=sys.stderr)
    process = subprocess.Popen(command, env=env)
    try:
        seconds = wait_healthy(health_url(run), run.vllm.server_timeout, process)
        print(f"vLLM server healthy at {health_url(run)} after {seconds:.0f} s "
              f"(GPUs {list(run.hardware.vllm_gpus)})", file=sys.stderr)
        sys.exit(process.wait())
    except RlhfError as error:
        process.terminate()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        process.terminate()
        sys.exit(process.wait())
