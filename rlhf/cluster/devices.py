"""Which GPUs each process of a job sees, decided before torch is imported.

    job_gpus(hardware, environ) -> JobGpus(train, vllm, why)

The job's GPUs are the ones it was given: SLURM's allocation or the shell's
CUDA_VISIBLE_DEVICES; on a bare host with neither, the first `hardware.gpus_per_node`. A sweep
on submitit's local executor (hydra/launcher=local_parallel) gives every concurrent job the
same list, so there job N takes the N-th slice of `hardware.gpus_per_node` GPUs of the host.
`hardware.train_gpus` and `hardware.vllm_gpus` are positions in the job's GPUs; without
`train_gpus`, training gets every GPU of the job that vLLM does not. Each training process of a
node uses one GPU (its LOCAL_RANK), so training sees exactly `processes_per_node` of them: a
single process on an 8-GPU host sees one, and no trainer falls back to nn.DataParallel.

The decision is exported as RLHF_JOB_GPUS, so the ranks a job starts (torchrun inherits the
environment) keep it instead of slicing the already-sliced list again.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Mapping

from rlhf.core.errors import RlhfError

DECIDED = "RLHF_JOB_GPUS"  # the training GPUs decided by the process that started this one
DECIDED_VLLM = "RLHF_VLLM_GPUS"  # and its vLLM server's
HOST_GPUS = "RLHF_HOST_GPUS"  # the launching shell's GPU list, for a local_parallel sweep's jobs
JOB_NUM = "RLHF_JOB_NUM"  # the job's number in its sweep (Hydra's hydra.job.num)


@dataclass(frozen=True)
class JobGpus:
    train: list[str]
    vllm: list[str]
    why: str


def split(listed: str | None) -> list[str] | None:
    if listed is None:
        return None
    return [d.strip() for d in listed.split(",") if d.strip()]


def host_gpu_count() -> int:
    """GPUs of this host as the driver lists them (nvidia-smi -L; no CUDA initialised)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.splitlines())


def given_gpus(hardware: Any, environ: Mapping[str, str], count_host: Any = host_gpu_count) -> tuple[list[str], str]:
    """The GPUs this job was given, and where that came from."""
    per_job = hardware.gpus_per_node
    if environ.get("SUBMITIT_EXECUTOR") == "local" and JOB_NUM in environ:
        host = split(environ.get(HOST_GPUS)) or [str(i) for i in range(count_host())]
        slots = max(1, len(host) // per_job)
        job = int(environ[JOB_NUM])
        slot = job % slots
        shared = f"; this host has {slots} such slice(s), so it shares them with job {slot}" if job >= slots else ""
        return host[slot * per_job:(slot + 1) * per_job], f"sweep job {job} of a local_parallel sweep, slice {slot}{shared}"
    visible = split(environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        return visible, "CUDA_VISIBLE_DEVICES" + (" (SLURM's allocation)" if "SLURM_JOB_ID" in environ else "")
    return [str(i) for i in range(per_job)], f"the first hardware.gpus_per_node={per_job} GPUs of the host"


def bound_per_task(environ: Mapping[str, str]) -> bool:
    """SLURM bound GPUs to each task (srun/sbatch --gpus-per-task, hydra.launcher.gpus_per_task,
    which set SLURM_GPUS_PER_TASK): this task, one rank, sees only its own GPU(s), not the
    node's. accelerate then puts the rank on its first visible GPU (LOCAL_RANK modulo the
    visible count: accelerate/state.py:843)."""
    return "SLURM_STEP_ID" in environ and bool(environ.get("SLURM_GPUS_PER_TASK"))


def job_gpus(hardware: Any, environ: Mapping[str, str], count_host: Any = host_gpu_count) -> JobGpus:
    """The GPUs training and the vLLM server of this job use (see the module doc). Under SLURM's
    per-task binding (bound_per_task) they are this task's: one rank trains on them."""
    decided = split(environ.get(DECIDED))
    if decided is not None:
        return JobGpus(decided, split(environ.get(DECIDED_VLLM)) or [], "decided by the process that started this one")
    given, source = given_gpus(hardware, environ, count_host)
    per_task = bound_per_task(environ)
    if per_task:
        source += f", this task's own (SLURM --gpus-per-task={environ['SLURM_GPUS_PER_TASK']})"

    def pick(ids: list[int], key: str) -> list[str]:
        outside = [i for i in ids if i >= len(given)]
        if outside:
            raise RlhfError(f"hardware.{key}={list(ids)}: position(s) {outside} are outside the {len(given)} GPU(s) "
                              f"this job has ({','.join(given) or 'none'}, from {source}); positions run from 0 "
                              f"to {len(given) - 1}")
        return [given[i] for i in ids]

    vllm = pick(list(hardware.vllm_gpus), "vllm_gpus") if hardware.vllm_gpus is not None else []
    if hardware.train_gpus is not None:
        train = pick(list(hardware.train_gpus), "train_gpus")
    else:
        train = [g for g in given if g not in vllm]
    wanted = 1 if per_task else hardware.processes_per_node
    if not given:
        raise RlhfError(f"hardware.accelerator=cuda, but this job was given no GPU ({source} is empty): run on a GPU "
                        "host or node, or choose hardware=cpu")
    if len(train) < wanted:
        raise RlhfError(f"hardware.processes_per_node={wanted} needs {wanted} training GPU(s), and this "
                        f"{'task' if per_task else 'job'} has "
                          f"{len(train)} ({','.join(train) or 'none'}: GPUs {','.join(given) or 'none'} from {source}"
                          + (f", minus hardware.vllm_gpus={list(hardware.vllm_gpus)}" if vllm else "") + ")")
    return JobGpus(train[:wanted], vllm, source)


def decide(hardware: Any, environ: dict[str, str]) -> JobGpus | None:
    """Restrict this process (and the ones it starts) to its training GPUs: CUDA_VISIBLE_DEVICES
    and the two RLHF_* variables set in `environ`. None for a CPU job (nothing changes)."""
    if hardware.accelerator != "cuda":
        return None
    gpus = job_gpus(hardware, environ)
    environ["CUDA_VISIBLE_DEVICES"] = environ[DECIDED] = ",".join(gpus.train)
    environ[DECIDED_VLLM] = ",".join(gpus.vllm)
    return gpus


def note_sweep_job(environ: dict[str, str], job_num: int | None) -> None:
    """In a job of submitit's local executor, record its sweep number (its slice of the host's
    GPUs follows from it)."""
    if environ.get("SUBMITIT_EXECUTOR") == "local" and job_num is not None:
        environ[JOB_NUM] = str(job_num)


def note_host_gpus(environ: dict[str, str]) -> None:
    """In the launching process: the shell's GPU list, which submitit's local executor replaces
    in each job's environment."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        environ.setdefault(HOST_GPUS, environ["CUDA_VISIBLE_DEVICES"])


def job_gpu_count(hardware: Any) -> int | None:
    """The GPUs a job holds while it runs: one per training process (hardware.nodes x
    processes_per_node; each trains on its own GPU, its LOCAL_RANK), and the GPUs set aside for
    its vLLM server (hardware.vllm_gpus). None for a job on the CPU.

    Args:
        hardware: the job's hardware config.

    Returns:
        The count, or None when hardware.accelerator is not cuda.
    """
    if hardware.accelerator != "cuda":
        return None
    return hardware.world_size + len(hardware.vllm_gpus or [])


def gpu_seconds(hardware: Any, wall_seconds: float) -> float | None:
    """A job session's GPU seconds: its wall seconds times the GPUs it holds (job_gpu_count),
    i.e. GPU time allocated to it, as a cluster bills it, not GPU utilisation measured.

    Args:
        hardware: the job's hardware config.
        wall_seconds: the wall seconds of the session (from the job's start, or its resume, to
            its end or its rung).

    Returns:
        The GPU seconds, rounded to 0.01; None for a job on the CPU (no GPU seconds, not zero).
    """
    count = job_gpu_count(hardware)
    return None if count is None else round(wall_seconds * count, 2)


def job_peak_memory(hardware: Any, at_least: dict[str, int] | None = None) -> dict[str, int]:
    """This process's peak memory since it started, for metrics.json, read at the very end of the
    job (after the save and the generation eval, the riskiest peaks): on a GPU, torch's
    allocator peak (`job_peak_gpu_memory_mib`); on the CPU, the process's peak resident set
    (`job_peak_rss_mib`). rlhf.gpu_check reports it. `at_least`: this function's reading from
    before a `stretch_peak` reset the high-water mark (the larger of the two is the job's)."""
    if hardware.accelerator == "cuda":
        import torch

        peak = {"job_peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20)}
    else:
        import resource

        peak = {"job_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}  # Linux: KiB
    return {key: max(value, (at_least or {}).get(key, 0)) for key, value in peak.items()}


def _status_mib(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM), in MiB."""
    import re

    with open("/proc/self/status", encoding="ascii") as f:
        return round(int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)[1]) / 1024)


@contextlib.contextmanager
def stretch_peak(hardware: Any) -> Iterator[dict[str, Any]]:
    """The peak memory of the code run inside, from its start: yields a dict filled on the way out
    with `measure` (what was read), `at_start_mib` (held when it began) and `peak_mib` (the most
    held while it ran, what it began with included). On a GPU, torch's allocator (its peak
    statistics reset); on the CPU, the process's resident set, its high-water mark reset through
    /proc/self/clear_refs (Linux). Either reset loses the peak from before: read
    job_peak_memory first and pass it as its `at_least`."""
    figures: dict[str, Any] = {}
    if hardware.accelerator == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
        figures.update(measure="torch.cuda.max_memory_allocated",
                       at_start_mib=round(torch.cuda.memory_allocated() / 2**20))
        yield figures
        figures["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        return
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # the resident set's high-water mark back to what is resident now
    figures.update(measure="process peak RSS (VmHWM)", at_start_mib=_status_mib("VmRSS"))
    yield figures
    figures["peak_mib"] = _status_mib("VmHWM")
