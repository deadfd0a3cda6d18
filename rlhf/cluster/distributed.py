"""Running one job as several training processes.

Hydra composes in the launching process only; every rank reads the job's resolved
`config.yaml` from the shared run dir, and rank 0 alone writes there.

- Locally (no SLURM), a job with hardware.nodes x processes_per_node > 1 starts its ranks with
  torchrun (`python -m rlhf.job.worker <run_dir>` in each), and waits for them.
- On SLURM the launcher asks for processes_per_node tasks per node, so each task already is a
  rank: SLURM's variables become torch's (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
  MASTER_ADDR is the address of the step's first node (where SLURM puts rank 0), found by
  DNS as on a real cluster, or from `scontrol show node`'s NodeAddr when the name does not
  resolve.
- What one rank prepares for all (the data) it publishes in the run dir for this launch
  (`publish`); the others wait for it (`wait_for_rank0`), and stop at once when rank 0 failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.run import rundir
from rlhf.config.schema import SHARDED
from rlhf.core.errors import RlhfError

# DeepSpeed configs: "auto" lets the HF Trainer fill batch sizes, clipping and precision in.
DEEPSPEED = {
    "deepspeed_zero2": {"zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}},
    "deepspeed_zero3": {"zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                                              "stage3_gather_16bit_weights_on_model_save": True}},
}
DEEPSPEED_AUTO = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                  "train_batch_size": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
                  "fp16": {"enabled": "auto"}}


def trl_kwargs(hardware: Any, rank0_loads: bool = False) -> dict[str, Any]:
    """The Trainer settings of the multi-process strategy, activation checkpointing included
    (FSDP does it itself). One code path for GPU and CPU: only the backend differs.
    `rank0_loads`: rank 0 alone reads the policy's checkpoint (see `rank0_loads`)."""
    checkpointing = hardware.activation_checkpointing
    kwargs: dict[str, Any] = {"activation_checkpointing": checkpointing}
    if hardware.world_size == 1:
        return kwargs
    kwargs["ddp_backend"] = "gloo" if hardware.accelerator == "cpu" else "nccl"
    if hardware.distributed == "fsdp":
        kwargs.update(fsdp=True, fsdp_config=fsdp_config(checkpointing, rank0_loads), activation_checkpointing=False)
    elif hardware.distributed in DEEPSPEED:
        kwargs["deepspeed"] = {**DEEPSPEED_AUTO, **DEEPSPEED[hardware.distributed]}
    return kwargs


def fsdp_config(activation_checkpointing: bool, rank0_loads: bool = False) -> dict[str, Any]:
    """FSDP2 (torch's fully_shard) through accelerate. Each decoder layer is its own shard unit:
    accelerate reads the layer class from the model's `_no_split_modules` (no class named here,
    so any architecture wraps). FSDP's own activation checkpointing replaces the Trainer's,
    which would all-gather each layer's weights once more in backward.

    Checkpoints are sharded (SHARDED_STATE_DICT): each rank writes its own shard of the weights
    and of the optimizer state with torch.distributed.checkpoint (accelerate's save_fsdp_model
    and save_fsdp_optimizer), and the Trainer resumes from them (load_fsdp_model); FULL_STATE_DICT
    gathered the whole optimizer state on rank 0 at every checkpoint (~57 GiB for 7B) while the
    other ranks waited. The final model is still gathered whole (rlhf.job.runner.save_trained).
    `cpu_ram_efficient_loading` with `rank0_loads`: rank 0 alone holds the checkpoint's weights,
    which accelerate broadcasts into every rank's shards (rlhf.models.loading.load_skeleton)."""
    return {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": True,
        "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": activation_checkpointing,
        "cpu_ram_efficient_loading": rank0_loads,
    }


def rank0_loads(hardware: Any, adapter: str, policy_read_before_sharding: bool) -> bool:
    """Whether rank 0 alone reads the policy's checkpoint and the other ranks build its
    structure only (FSDP of several ranks). Not with QLoRA: accelerate skips the broadcast for
    a model with 4-bit parameters (accelerate/utils/fsdp_utils.py:830, 887), so every rank must
    load them. Not when TRL reads the policy's weights before the Trainer shards it
    (`policy_read_before_sharding`: DPO's and KTO's reference log-probs precomputed by the policy
    with its adapter disabled, in their __init__: trl/trainer/dpo_trainer.py:909-914, 1013-1031).
    Without it every rank held a whole copy of the weights in host memory (transformers 5.23
    reads the whole checkpoint on every rank except under ZeRO-3: modeling_utils.py:4522-4590).
    Not run on GPUs here; trained on two CPU ranks (tests/test_distributed.py)."""
    return (hardware.world_size > 1 and hardware.distributed == "fsdp" and adapter != "qlora"
            and not policy_read_before_sharding)


def on_rank0(load: Any, skeleton: Any, describe: Any) -> Any:
    """`load()` on rank 0; on the other ranks `skeleton(describe(what rank 0 loaded))`, the
    description broadcast from rank 0 (a collective: every rank calls this). A failure on rank 0
    reaches the others as an error naming it instead of leaving them in the broadcast."""
    import torch.distributed as dist

    rank = this_rank()[0]
    loaded, shape = None, [None]
    if rank == 0:
        try:
            loaded = load()
            shape = [describe(loaded)]
        except BaseException:
            dist.broadcast_object_list([{"failed": True}], src=0)
            raise
    dist.broadcast_object_list(shape, src=0)
    if rank == 0:
        return loaded
    if shape[0].get("failed"):
        raise RlhfError("rank 0 failed to load the model (its error is in its log and the run dir's FAILED)")
    return skeleton(shape[0])




def sharded(hardware: Any) -> bool:
    """The ranks hold the model in shards: a full state dict is gathered by all of them."""
    return hardware.world_size > 1 and hardware.distributed in SHARDED


def prepare_strategy(hardware: Any) -> None:
    """What must hold in this process before the models load, after the TRL config is built
    (which started the process group and, for ZeRO-3, registered the DeepSpeed config that
    makes from_pretrained shard each model as it builds it)."""
    if hardware.world_size > 1 and hardware.distributed == "fsdp" and hardware.accelerator == "cpu":
        from rlhf.trl.fsdp_on_cpu import fsdp_on_cpu

        fsdp_on_cpu()


@contextlib.contextmanager
def loading_whole_models(args: Any) -> Iterator[None]:
    """from_pretrained on this rank alone, once the ranks are done (rank 0's generation eval,
    its merge of a sharded adapter): a whole model, no collective. The TRL config `args` of a
    ZeRO-3 run registered its DeepSpeed config (TrainingArguments keeps it, transformers reads
    it through a weak reference), under which from_pretrained builds each model inside
    zero.Init, partitioning it across ranks that are gone. It is unregistered meanwhile and
    registered again after. (FSDP needs nothing here: rank 0 is local rank 0, which
    from_pretrained loads whole under cpu_ram_efficient_loading too: modeling_utils.py:4853, 4889.)"""
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    registered = getattr(args, "hf_deepspeed_config", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if registered is not None:
            set_hf_deepspeed_config(registered)


def describe(trainer: Any) -> dict[str, Any]:
    """How the ranks actually trained, as accelerate set it up: a strategy that fell back to
    another (an FSDP plugin dropped, say) shows here, not only in the step times."""
    accelerator = trainer.accelerator
    described: dict[str, Any] = {"type": str(accelerator.distributed_type.value), "processes": accelerator.num_processes}
    if accelerator.is_fsdp2:
        from collections import Counter

        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
        from torch.distributed.fsdp import FSDPModule

        modules = list(trainer.model_wrapped.modules())
        units = Counter(type(m).__name__.removeprefix("FSDP") for m in modules if isinstance(m, FSDPModule))
        described.update(fsdp_version=2, fsdp_units=dict(sorted(units.items())),
                         checkpointed_layers=sum(isinstance(m, CheckpointWrapper) for m in modules))
    return described


def slurm_task() -> tuple[int, int] | None:
    """(rank, world) when this process is one of several tasks of a SLURM job step."""
    if "SLURM_STEP_ID" not in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return None
    return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])


def export_slurm_ranks() -> None:
    """Give torch.distributed the rendezvous of a multi-task SLURM job."""
    rank, world = slurm_task()
    job = int(os.environ.get("SLURM_JOB_ID", "0"))
    master = os.environ.get("MASTER_ADDR")
    if not master:
        nodelist = next((os.environ[k] for k in NODELISTS if os.environ.get(k)), "")
        master = (node_address(first_host(nodelist)) if nodelist
                  else os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    os.environ.update({
        "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": os.environ.get("SLURM_NTASKS_PER_NODE", str(world)).split("(")[0],
        "MASTER_ADDR": master,
        "MASTER_PORT": os.environ.get("MASTER_PORT", str(20000 + job % 20000)),
    })


# The nodes of the step (srun's; rank 0 runs on its first node), else of the whole job.
NODELISTS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist: 'gpu[07-09,12],cpu1' -> 'gpu07', 'r[1-2]n[3-4]' ->
    'r1n3' (what `scontrol show hostnames` would print first, without needing scontrol)."""
    depth, first = 0, ""
    for char in nodelist.strip():
        if char == "," and depth == 0:
            break
        depth += (char == "[") - (char == "]")
        first += char
    if not first or depth != 0 or "[]" in first:
        raise RlhfError(f"cannot read the SLURM node list {nodelist!r}: expected names like node1,node2 or "
                        "node[1-4]")
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1))[0], first)


def node_address(name: str) -> str:
    """The address of node `name`: its DNS name's (what a real cluster gives), else the
    NodeAddr SLURM knows it by (`scontrol show node`)."""
    try:
        return socket.gethostbyname(name)
    except OSError as error:
        dns = error
    try:
        proc = subprocess.run(["scontrol", "-o", "show", "node", name], capture_output=True, text=True, timeout=30)
        found = re.search(r"\bNodeAddr=(\S+)", proc.stdout)
        said = (proc.stderr or proc.stdout).strip()[:300]
    except (OSError, subprocess.SubprocessError) as error:
        found, said = None, str(error)
    if found:
        try:
            return socket.gethostbyname(found.group(1))
        except OSError:
            pass
    raise RlhfError(f"cannot find the address of node {name} (rank 0's node): the name does not resolve ({dns}), "
                    f"and `scontrol show node {name}` gave {found.group(0) if found else said!r}; set MASTER_ADDR "
                    "to its address in hydra.launcher.setup")


def this_rank() -> tuple[int, int]:
    """(rank, world size) of this process in its job, from torch's variables; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rank_info() -> dict[str, Any]:
    """Where this rank runs (its host, SLURM node and address) and the rendezvous it used."""
    host = socket.gethostname()
    try:
        address = socket.gethostbyname(host)
    except OSError:
        address = None
    rank, _ = this_rank()
    return {"rank": rank, "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "host": host,
            "slurm_node": os.environ.get("SLURMD_NODENAME"), "address": address, "pid": os.getpid(),
            "master_addr": os.environ.get("MASTER_ADDR")}


def gather_ranks(**extra: Any) -> list[dict[str, Any]]:
    """rank_info() of every rank with its `extra` fields, in rank order: a collective, so every
    rank calls it once the process group exists (alone: this process's)."""
    import torch.distributed as dist

    mine = {**rank_info(), **extra}
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every


# ---------------------------------------------------------------------------- rank 0 prepares, the others wait

RANK0_WAIT_S = 2 * 3600  # how long the other ranks wait for what rank 0 prepares (a big dataset's download)


def launch_id() -> str:
    """What every rank of one start of a job shares and the next start of the same run dir (a
    requeue, a re-run) does not: a word rank 0 left in an earlier start is not taken for this one."""
    keys = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID",
            "TORCHELASTIC_RESTART_COUNT", "MASTER_PORT")
    return ";".join(f"{k}={os.environ.get(k, '')}" for k in keys)


def publish(run_dir: Path, name: str, value: dict[str, Any]) -> None:
    """Rank 0 tells the other ranks of this launch what it prepared (in run_dir/name)."""
    rundir.atomic_write(Path(run_dir) / name, json.dumps({"launch": launch_id(), **value}) + "\n")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def wait_for_rank0(run_dir: Path, name: str, what: str, timeout: float | None = None,
                   poll: float = 0.5) -> dict[str, Any]:
    """What rank 0 published as `name` for this launch. Raises as soon as rank 0 records a
    failure in the run dir (a FAILED that was not there, or not this one, when the wait began:
    an earlier start's is stale), or after `timeout` seconds, naming the file waited for."""
    run_dir = Path(run_dir)
    timeout = RANK0_WAIT_S if timeout is None else timeout
    path, failed = run_dir / name, run_dir / rundir.FAILED
    stale, launch, started = _stat(failed), launch_id(), time.monotonic()
    while True:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            value = None
        if isinstance(value, dict) and value.get("launch") == launch:
            return value
        now = _stat(failed)
        if now is not None and now != stale:
            raise RlhfError(f"rank 0 failed before it could {what}: {rundir.failure(run_dir, first_line=True)} "
                            f"(see {failed})")
        if time.monotonic() - started > timeout:
            raise RlhfError(f"rank 0 did not {what} within {timeout:.0f} s: {path} did not appear for this launch "
                            f"({launch}); see rank 0's log in {run_dir}")
        time.sleep(poll)


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
               "-m", "rlhf.job.worker", str(run_dir)]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(hardware.torch_threads or hardware.cpus_per_process)
    process = subprocess.run(command, env=env)
    if process.returncode != 0:
        failed = rundir.failure(run_dir)
        raise RlhfError(failed or f"a training rank exited with code {process.returncode}; see {run_dir}")
