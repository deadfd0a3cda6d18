"""Checks that span config groups, run on every validated config before anything loads.

Each check takes the typed run (rlhf.config.validate.RunSpec) and returns the problems it
finds, as sentences that name the keys involved and what would be valid. These are the checks
of config's own groups (hardware, peft, the optimizer, model files, the objective); the data
and judge sides register the checks of the dataset and evaluate blocks (rlhf.config.registry).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any



def check_hardware(run: Any) -> list[str]:
    hardware = run.hardware
    problems = []
    if hardware.accelerator == "cpu":
        if hardware.precision == "fp16":
            problems.append("hardware.precision=fp16 needs a GPU; on the CPU use hardware.precision=fp32 (or bf16)")
        if hardware.gpus_per_node:
            problems.append(f"hardware.gpus_per_node={hardware.gpus_per_node} with hardware.accelerator=cpu: "
                            "hardware.accelerator=cuda to use GPUs, or hardware.gpus_per_node=0")
        if hardware.distributed not in ("none", "ddp", "fsdp"):
            problems.append(f"hardware.distributed={hardware.distributed} needs GPUs; on the CPU use "
                            "hardware.distributed=ddp or fsdp (gloo)")
    elif hardware.gpus_per_node < 1:
        problems.append("hardware.accelerator=cuda with hardware.gpus_per_node=0: give the GPUs per node, "
                        "e.g. hardware.gpus_per_node=1")
    processes = hardware.world_size
    if processes > 1 and hardware.distributed == "none":
        problems.append(f"{processes} processes (hardware.nodes x processes_per_node) need a strategy: "
                        "hardware.distributed=ddp (or fsdp, deepspeed_zero2, deepspeed_zero3)")
    if hardware.train_gpus is not None and hardware.vllm_gpus is not None:
        shared = sorted(set(hardware.train_gpus) & set(hardware.vllm_gpus))
        if shared:
            problems.append(f"GPUs {shared} are in both hardware.train_gpus={list(hardware.train_gpus)} and "
                            f"hardware.vllm_gpus={list(hardware.vllm_gpus)}: the vLLM server and training "
                            "need disjoint GPUs")
    return problems


def check_gpus(run: Any) -> list[str]:
    """hardware.train_gpus and vllm_gpus are positions among the job's hardware.gpus_per_node GPUs
    (rlhf.cluster.devices), and every training process of a node gets one GPU of its own."""
    hardware = run.hardware
    if hardware.accelerator != "cuda":
        return []
    problems = []
    for key in ("train_gpus", "vllm_gpus"):
        ids = getattr(hardware, key)
        outside = [i for i in (ids or []) if not 0 <= i < hardware.gpus_per_node]
        if outside:
            problems.append(f"hardware.{key}={list(ids)}: position(s) {outside} are outside the job's "
                            f"hardware.gpus_per_node={hardware.gpus_per_node} GPUs (0 to {hardware.gpus_per_node - 1})")
    if problems:
        return problems
    if hardware.train_gpus is not None:
        training = len(hardware.train_gpus)
        why = f"hardware.train_gpus={list(hardware.train_gpus)}"
    else:
        training = hardware.gpus_per_node - len(set(hardware.vllm_gpus or []))
        why = f"hardware.gpus_per_node={hardware.gpus_per_node}" + (
            f" minus hardware.vllm_gpus={list(hardware.vllm_gpus)}" if hardware.vllm_gpus else "")
    if training < hardware.processes_per_node:
        problems.append(f"hardware.processes_per_node={hardware.processes_per_node} training processes need a GPU "
                        f"each, and {why} leaves {training}: lower processes_per_node or give more GPUs")
    return problems


def check_peft(run: Any) -> list[str]:
    peft = run.peft
    problems = []
    if peft.adapter == "none" and peft.rl_adapter_ref_model:
        problems.append("peft.rl_adapter_ref_model=true only applies with an adapter (peft=lora or qlora)")
    if peft.adapter == "qlora":
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append("peft=qlora loads the model in 4 bits with bitsandbytes, which is not installed: "
                            "pip install bitsandbytes (on a CUDA machine), or use peft=lora")
        if run.hardware.accelerator != "cuda":  # whether this machine has one: check_machine
            problems.append("peft=qlora needs a CUDA GPU (bitsandbytes 4-bit kernels), and this config asks "
                            "for hardware.accelerator=cpu: use peft=lora, or a GPU hardware option")
    if peft.adapter != "none" and not isinstance(peft.target_modules, (str, list, tuple)):
        problems.append(f"peft.target_modules={peft.target_modules!r} must be 'all-linear' or a list of names")
    return problems


# Optimizers that transformers runs through bitsandbytes.
BNB_OPTIMIZERS = ("8bit", "paged_")


def check_optimizer(run: Any) -> list[str]:
    name = run.method.optimizer
    if any(marker in name for marker in BNB_OPTIMIZERS) and importlib.util.find_spec("bitsandbytes") is None:
        return [f"method.optimizer={name} runs on bitsandbytes, which is not installed: pip install bitsandbytes "
                "(on a CUDA machine), or use method.optimizer=adamw_torch_fused"]
    return []


_PATH_PREFIXES = ("/", "./", "../", "~")


def check_model_files(run: Any) -> list[str]:
    """A model, tokenizer or chat template given as a local path exists (a hub id is not checked)."""
    model = run.model
    problems = []
    for key, value in (("model.name_or_path", model.name_or_path), ("model.tokenizer", model.tokenizer)):
        if value and str(value).startswith(_PATH_PREFIXES) and not Path(value).expanduser().is_dir():
            problems.append(f"{key}={value}: no such directory (a local checkpoint is a directory with "
                            "config.json; a hub id looks like org/name)")
    template = model.chat_template
    if template and str(template).endswith(".jinja") and not Path(template).expanduser().is_file():
        problems.append(f"model.chat_template={template}: no such file")
    return problems




def objective_metric(run: Any) -> str:
    return run.objective.metric or run.spec.metric


def objective_direction(metric: str, direction: str | None, greater_is_better: bool | None = None) -> str:
    """The sense of an objective: as given, else minimise losses and maximise the rest."""
    if direction is not None:
        return direction
    if "loss" in metric:
        return "minimize"
    return "maximize" if greater_is_better is not False else "minimize"


def check_objective(run: Any) -> list[str]:
    metric = objective_metric(run)
    if run.objective.direction == "maximize" and "loss" in metric:
        return [f"objective.direction=maximize for objective.metric={metric}: a loss is minimised "
                "(objective.direction=minimize, or leave it unset)"]
    return []


# The checks of config's own groups; the sides above register theirs (rlhf.config.registry).
RUN_CHECKS = (check_hardware, check_gpus, check_peft, check_optimizer, check_model_files, check_objective)


# ---------------------------------------------------------------------------- the machine


def cuda_driver_present() -> bool:
    """An NVIDIA driver is installed here: nvidia-smi on PATH or /proc/driver/nvidia. Neither
    imports torch nor initialises CUDA (a process that has called torch.cuda cannot fork its
    workers safely, and the launching process forks Hydra's and submitit's)."""
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def check_machine(run: Any) -> list[str]:
    """What the machine the job runs on must have. Not one of RUN_CHECKS: those check a config
    wherever it is read (a SLURM login node, a saved config on a compute node), this checks the
    machine it runs on, so the launching process runs it only when its launcher trains here
    (rlhf.launch.cli.preflight). A machine with a driver but a torch build without CUDA is still found
    by the job itself (rlhf.job.process.configure_process), which may import torch."""
    if run.hardware.accelerator != "cuda" or cuda_driver_present():
        return []
    qlora = " (peft=qlora too: its 4-bit kernels run on CUDA only)" if run.peft.adapter == "qlora" else ""
    return [f"hardware.accelerator=cuda, but this machine has no NVIDIA driver (no nvidia-smi on PATH, no "
            f"/proc/driver/nvidia){qlora}: choose hardware=cpu, run on a GPU host, or send the jobs to GPU nodes "
            "with hydra/launcher=slurm"]


# The install hint of the DeepSpeed strategies (setup.cfg's `deepspeed` extra).
DEEPSPEED_EXTRA = "pip install -e '.[deepspeed]'"


def check_deepspeed(run: Any) -> list[str]:
    """A DeepSpeed strategy has DeepSpeed installed where the job trains. The Trainer imports it
    only when it builds its arguments, after the models have loaded, on every rank: missing, it
    is this one message before anything starts. Found without importing it (as bitsandbytes
    is for peft=qlora). One process uses no strategy (rlhf.cluster.distributed.trl_kwargs), so needs none."""
    strategy = run.hardware.distributed
    if not strategy.startswith("deepspeed") or run.hardware.world_size < 2:
        return []
    if importlib.util.find_spec("deepspeed") is not None:
        return []
    return [f"hardware.distributed={strategy} trains with DeepSpeed, which is not installed here: "
            f"{DEEPSPEED_EXTRA} (on the machine that trains), or use hardware.distributed=fsdp"]


MACHINE_CHECKS = (check_machine, check_deepspeed)
