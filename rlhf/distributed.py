"""Running one job as several training processes.

Hydra composes in the launching process only; every rank reads the job's resolved
`config.yaml` from the shared run dir, and rank 0 alone writes there.

- Locally (no SLURM), a job with hardware.nodes x processes_per_node > 1 starts its ranks with
  torchrun (`python -m rlhf.worker <run_dir>` in each), and waits for them.
- On SLURM the launcher asks for processes_per_node tasks per node, so each task already is a
  rank: SLURM's variables become torch's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rlhf import rundir
from rlhf.errors import RlhfError

# DeepSpeed configs: "auto" lets the HF Trainer fill batch sizes, clipping and precision in.
DEEPSPEED = {
    "deepspeed_zero2": {"zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}},
    "deepspeed_zero3": {"zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                                              "stage3_gather_16bit_weights_on_model_save": True}},
}
DEEPSPEED_AUTO = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                  "train_batch_size": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
                  "fp16": {"enabled": "auto"}}


def trl_kwargs(hardware: Any) -> dict[str, Any]:
    """The Trainer settings of the multi-process strategy, activation checkpointing included
    (FSDP does it itself). One code path for GPU and CPU: only the backend differs."""
    checkpointing = hardware.activation_checkpointing
    kwargs: dict[str, Any] = {"activation_checkpointing": checkpointing}
    if hardware.world_size == 1:
        return kwargs
    kwargs["ddp_backend"] = "gloo" if hardware.accelerator == "cpu" else "nccl"
    if hardware.distributed == "fsdp":
        kwargs.update(fsdp=True, fsdp_config=fsdp_config(checkpointing), activation_checkpointing=False)
    elif hardware.distributed in DEEPSPEED:
        kwargs["deepspeed"] = {**DEEPSPEED_AUTO, **DEEPSPEED[hardware.distributed]}
    return kwargs


def fsdp_config(activation_checkpointing: bool) -> dict[str, Any]:
    """FSDP2 (torch's fully_shard) through accelerate. Each decoder layer is its own shard unit:
    accelerate reads the layer class from the model's `_no_split_modules` (no class named here,
    so any architecture wraps). FSDP's own activation checkpointing replaces the Trainer's,
    which would all-gather each layer's weights once more in backward. The full state dict is
    gathered on save, so the saved model is an ordinary checkpoint."""
    return {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": True,
        "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": activation_checkpointing,
    }


def slurm_task() -> tuple[int, int] | None:
    """(rank, world) when this process is one of several tasks of a SLURM job step."""
    if "SLURM_STEP_ID" not in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return None
    return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])


def export_slurm_ranks() -> None:
    """Give torch.distributed the rendezvous of a multi-task SLURM job."""
    rank, world = slurm_task()
    first_node = os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1")
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    if nodes and "[" not in nodes and "," not in nodes:  # one node: its own name
        first_node = nodes
    job = int(os.environ.get("SLURM_JOB_ID", "0"))
    os.environ.update({
        "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": os.environ.get("SLURM_NTASKS_PER_NODE", str(world)).split("(")[0],
        "MASTER_ADDR": os.environ.get("MASTER_ADDR", first_node),
        "MASTER_PORT": os.environ.get("MASTER_PORT", str(20000 + job % 20000)),
    })


def wait_for(path: Path, timeout: float = 600) -> None:
    """Ranks other than 0 wait for rank 0 to write the run dir's config."""
    started = time.monotonic()
    while not path.is_file():
        if time.monotonic() - started > timeout:
            raise RlhfError(f"rank 0 did not write {path} within {timeout:.0f} s")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_local_ranks(run_dir: Path, hardware: Any) -> None:
    """Start processes_per_node ranks on this machine with torchrun and wait for them."""
    if hardware.nodes > 1:
        raise RlhfError(f"hardware.nodes={hardware.nodes}: a multi-node job needs a cluster launcher "
                        "(hydra/launcher=slurm); locally only one node runs")
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={hardware.processes_per_node}",
               "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "rlhf.worker", str(run_dir)]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(hardware.torch_threads or hardware.cpus_per_process)
    process = subprocess.run(command, env=env)
    if process.returncode != 0:
        failed = rundir.failure(run_dir)
        raise RlhfError(failed or f"a training rank exited with code {process.returncode}; see {run_dir}")
