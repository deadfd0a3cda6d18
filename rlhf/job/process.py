"""Setting a training process up for its job, once, before anything trains.

    start_process(run): environment, devices and threads, the C allocator, logging; then
    torch, transformers, datasets and the method's TRL trainer imported up front, with the
    cyclic garbage collector paused and what the imports created frozen.

Every training process runs this (the one Hydra started, an extra rank, a SLURM task), so
a process trains exactly as fast wherever it was started.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
from typing import Any

from rlhf.core.errors import RlhfError
from rlhf.core.usercode import import_object

log = logging.getLogger("rlhf")


# Quiet defaults for a training process; a user's own setting wins.
PROCESS_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


def configure_process(run: Any) -> None:
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)
    from rlhf.cluster import devices

    gpus = devices.decide(run.hardware, os.environ)  # before torch sees the devices
    if run.hardware.accelerator == "cpu":
        # accelerate imports DeepSpeed when it is installed (dev extra), which then warns on
        # every process that it found no GPU; on a CPU job that is the point.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    else:
        from rlhf.config.checks import check_deepspeed

        # The launching process checks this where the jobs train there; a SLURM job's node may
        # have another environment: one message before any model loads, not an ImportError per rank.
        for problem in check_deepspeed(run):
            raise RlhfError(problem)
    import torch

    if run.hardware.accelerator == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RlhfError(f"hardware.accelerator=cuda, but torch {torch.__version__} sees no CUDA device"
                        + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
                        + ": run on a GPU host with a CUDA build of torch, or choose hardware=cpu")
    threads = run.hardware.torch_threads or run.hardware.cpus_per_process
    torch.set_num_threads(threads)
    if run.hardware.accelerator == "cpu" and run.hardware.malloc_keep_mb:
        keep_freed_memory(run.hardware.malloc_keep_mb)
    if not logging.getLogger().handlers:  # run outside Hydra (a rank, a test): log to stderr
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    log.setLevel(logging.INFO)
    if gpus is not None:
        log.info("training GPUs %s%s (%s)", ",".join(gpus.train),
                 f", vLLM server GPUs {','.join(gpus.vllm)}" if gpus.vllm else "", gpus.why)
    import transformers

    transformers.logging.set_verbosity_warning()
    route_library_logs()


# Libraries that give their root logger a stderr handler of their own on import.
LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "datasets")


def route_library_logs() -> None:
    """Each library record handled once, by the root's handlers (Hydra's console and the run's
    log file, or the stderr handler set above). huggingface_hub and datasets add a bare stderr
    handler to their root logger and also propagate to the root, so every warning (each hub
    retry, for one) was printed twice; transformers propagates under CI=1 and so doubled there,
    and otherwise kept its warnings out of the run's log file."""
    import datasets.utils.logging  # noqa: F401  (each adds its handler when imported)
    import huggingface_hub.utils.logging  # noqa: F401
    import transformers

    transformers.logging.disable_default_handler()
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for handler in [h for h in library.handlers if type(h) is logging.StreamHandler]:
            library.removeHandler(handler)
        library.propagate = True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory(megabytes: int) -> bool:
    """Have glibc's malloc serve blocks up to 32 MiB from its heap and keep up to `megabytes` of
    freed memory for reuse. glibc's self-adjusting defaults map many of a CPU training step's
    large tensors fresh from the OS and return them when freed, so their pages fault in again:
    ~2,300 extra page faults a step on the tiny DPO model, about 5% of its step time. False where
    the C library is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, megabytes << 20))


@contextlib.contextmanager
def frozen_imports():
    """Import the training stack with Python's cyclic garbage collector paused, then freeze what
    the imports created. torch, transformers and TRL leave about half a million objects (modules,
    classes, functions) that live as long as the process; left in the collector's generations,
    every full collection while importing, loading and training scans them all again, which cost
    this process about a second more than a plain TRL script before its first step. Frozen
    objects are still freed by reference counting; only the cycle collector skips them."""
    gc.collect()  # what is garbage now (the config's reference cycles) is not frozen with the rest
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class _Started:
    run: Any = None  # the job this process was last set up for


def start_process(run: Any) -> None:
    """Set this process up for the job (once per job): environment, devices and threads, then
    torch, transformers, datasets and the method's TRL trainer imported up front under
    frozen_imports."""
    if _Started.run is run:
        return
    import warnings

    # TRL 1.16's unwrap_model_for_generation reads transformers' deprecated
    # `is_gradient_checkpointing` at every generation (online methods, a reward model as the
    # reward): the same FutureWarning, once per step, says nothing the user can act on.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    with frozen_imports():
        configure_process(run)
        import_object(run.spec.trl_config)
        import_object(run.spec.trl_trainer)
        import datasets  # noqa: F401
    _Started.run = run
