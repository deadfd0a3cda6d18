"""Train one job from its run dir, top to bottom.

    config -> validate -> tokenizer -> data -> model (+ reference) -> TRL trainer -> train
           -> final eval -> save model -> metrics.json -> SUCCESS

The only input is `<run_dir>/config.yaml`, so the process Hydra started, an extra rank and a
SLURM task all run exactly this. No Hydra here.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from rlhf import distributed, rundir
from rlhf.config.validate import RunSpec, validate
from rlhf.errors import RlhfError

log = logging.getLogger("rlhf")

# Quiet defaults for a training process; a user's own setting wins.
PROCESS_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


def import_object(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def configure_process(spec: RunSpec) -> None:
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)
    if spec.hardware.train_gpus is not None:  # before torch sees the devices
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.hardware.train_gpus)
    import torch

    if spec.hardware.accelerator == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RlhfError(f"hardware.accelerator=cuda, but torch {torch.__version__} sees no CUDA device"
                        + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
                        + ": run on a GPU host with a CUDA build of torch, or choose hardware=cpu")
    threads = spec.hardware.torch_threads or spec.hardware.cpus_per_process
    torch.set_num_threads(threads)
    if spec.hardware.accelerator == "cpu" and spec.hardware.malloc_keep_mb:
        keep_freed_memory(spec.hardware.malloc_keep_mb)
    if not logging.getLogger().handlers:  # run outside Hydra (a rank, a test): log to stderr
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    log.setLevel(logging.INFO)
    import transformers

    transformers.logging.set_verbosity_warning()


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


_STARTED_FOR: list[RunSpec] = []  # the job this process was last set up for


def start_process(spec: RunSpec) -> None:
    """Set this process up for the job (once per job): environment, devices and threads, then
    torch, transformers, datasets and the method's TRL trainer imported up front under
    frozen_imports."""
    if _STARTED_FOR and _STARTED_FOR[0] is spec:
        return
    with frozen_imports():
        configure_process(spec)
        import_object(spec.spec.trl_config)
        import_object(spec.spec.trl_trainer)
        import datasets  # noqa: F401
    _STARTED_FOR[:] = [spec]


def trl_arguments(spec: RunSpec, run_dir: Path, has_eval: bool) -> Any:
    """The TRL config of this run: the method's fields plus what the run and hardware decide."""
    kwargs = spec.spec.trl_kwargs(spec.method, has_eval)
    if spec.spec.run_trl is not None:
        kwargs.update(spec.spec.run_trl(spec))
    hardware = spec.hardware
    kwargs.update(
        output_dir=str(run_dir / rundir.CHECKPOINTS),
        seed=spec.seed,
        data_seed=spec.seed,
        use_cpu=hardware.accelerator == "cpu",
        bf16=hardware.precision == "bf16",
        fp16=hardware.precision == "fp16",
        activation_checkpointing=hardware.activation_checkpointing,
        dataloader_num_workers=hardware.dataloader_num_workers,
        report_to=[] if spec.logger.backend == "none" else [spec.logger.backend],
        **distributed.trl_kwargs(hardware),
        logging_first_step=True,
        disable_tqdm=not sys.stderr.isatty(),
    )
    return import_object(spec.spec.trl_config)(**kwargs)


class HistoryWriter:
    """Appends every logged metrics dict to log_history.jsonl as it happens (rank 0 only)."""

    def __init__(self, path: Path):
        from transformers import TrainerCallback

        self.path = path

        class _Callback(TrainerCallback):
            def on_log(inner, args, state, control, logs=None, **kwargs):  # noqa: N805
                if state.is_world_process_zero and logs:
                    with open(path, "a", encoding="utf-8") as f:
                        line = {"step": state.global_step, **logs, "time": time.time(),
                                "cpu_time": time.process_time()}
                        f.write(json.dumps(line) + "\n")

        self.callback = _Callback()


def build_trainer(spec: RunSpec, kwargs: dict[str, Any], data_dir: Path) -> tuple[Any, dict | None]:
    """The TRL trainer. With precomputed reference log-probs (DPO family) the precompute goes
    through the shared store (rlhf.shared_reference), and jobs sharing the prepared data build
    their trainers one at a time, so the log-probs are computed once. Returns, per split,
    whether they were computed or reused."""
    trainer_class = import_object(spec.spec.trl_trainer)
    if not getattr(spec.method, "precompute_ref_log_probs", False) or spec.spec.kind != "dpo":
        return trainer_class(**kwargs), None
    from rlhf.data.pipeline import _locked
    from rlhf.shared_reference import sharing_trainer

    shared_class = sharing_trainer(trainer_class, data_dir, spec.method.max_length)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # The ranks of one job construct together (collectives inside); concurrent jobs may
        # then both compute, and the store's atomic rename keeps it whole.
        trainer = shared_class(**kwargs)
    else:
        with _locked(data_dir / "reference.lock"):
            trainer = shared_class(**kwargs)
    return trainer, dict(trainer.shared_reference)


def latest_checkpoint(run_dir: Path) -> str | None:
    directory = run_dir / rundir.CHECKPOINTS
    if not directory.is_dir():
        return None
    steps = [p for p in directory.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(steps, key=lambda p: int(p.name.split("-")[1]))) if steps else None


def peft_config(spec: RunSpec) -> Any:
    if spec.peft.adapter == "none":
        return None
    from peft import LoraConfig

    target = spec.peft.target_modules
    return LoraConfig(r=spec.peft.r, lora_alpha=spec.peft.alpha, lora_dropout=spec.peft.dropout,
                      target_modules=target if isinstance(target, str) else list(target),
                      bias=spec.peft.bias, task_type="CAUSAL_LM")


def check_target_modules(spec: RunSpec, model: Any) -> None:
    """Each LoRA target module name matches a module of the model (PEFT's own error comes from
    deep inside the trainer, without the names the model has)."""
    import torch

    from rlhf.errors import did_you_mean

    targets = spec.peft.target_modules
    if spec.peft.adapter == "none" or isinstance(targets, str):
        return  # a string is 'all-linear' or a regular expression, which PEFT checks itself
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        hints = "".join(did_you_mean(t, linear) for t in missing)
        raise RlhfError(f"peft.target_modules: {', '.join(repr(t) for t in missing)} matches no module of "
                        f"{spec.model.name_or_path}{hints}; its linear layers are {', '.join(linear)} "
                        "(or use 'all-linear')")


def models_in_memory() -> int:
    """How many transformers models this process holds (a reference copy shows up here)."""
    import gc
    import warnings

    from transformers import PreTrainedModel

    gc.collect()  # what an earlier job of an in-process sweep left in reference cycles
    with warnings.catch_warnings():  # isinstance() pokes deprecated lazy objects on the heap
        warnings.simplefilter("ignore")
        models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    inner = {id(m) for model in models for m in model.modules() if m is not model}
    return sum(id(model) not in inner for model in models)


def final_metrics(spec: RunSpec, trainer: Any, train_result: Any, has_eval: bool) -> dict[str, Any]:
    history = trainer.state.log_history
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    if has_eval and (not evals or evals[-1].get("step", trainer.state.global_step) != trainer.state.global_step):
        trainer.evaluate()
        evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    train_logs = [h for h in history if "loss" in h]
    return {
        "train": {**train_result.metrics, **({"last_logged": train_logs[-1]} if train_logs else {})},
        "eval": {k: v for k, v in evals[-1].items() if k.startswith("eval_")} if evals else {},
        "global_step": trainer.state.global_step,
        "first_loss": train_logs[0]["loss"] if train_logs else None,
        "learning": spec.spec.summarize(trainer.state.log_history) if spec.spec.summarize else {},
    }


def prepare_before_ranks(run_dir: Path, spec: RunSpec) -> None:
    """Check the machine and prepare the data once, in the process that starts the ranks: a bad
    row is then one message before torchrun starts, and every rank finds the data cached."""
    from rlhf.data.pipeline import prepare_data
    from rlhf.models import load_tokenizer

    start_process(spec)
    prepare_data(spec, load_tokenizer(spec.model), run_config=rundir.read_config(run_dir))


def run_until_done(run_dir: Path, spec: RunSpec | None = None) -> dict[str, Any]:
    """`run`, saving and stopping on SLURM's warning signals (see rlhf.preemption)."""
    from rlhf.preemption import Preemption

    spec = spec or validate(rundir.read_config(run_dir))
    start_process(spec)  # before the callback below imports transformers
    preemption = Preemption().install()
    try:
        metrics = run(run_dir, callbacks=[preemption.callback()], spec=spec)
    finally:
        preemption.finish()  # a recorded signal requeues (submitit) or raises Preempted
    return metrics


def run(run_dir: str | Path, callbacks: list | None = None, spec: RunSpec | None = None) -> dict[str, Any]:
    """Train the job in `run_dir`. `spec` is its config already validated in this process (the
    one Hydra composed, which is what config.yaml holds); other processes validate the file."""
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    spec = spec or validate(config)
    from rlhf.usercode import EXTRA_DIRS

    EXTRA_DIRS[:] = [Path(d) for d in spec.code_path]
    start_process(spec)
    started = time.perf_counter()

    from rlhf.data.pipeline import prepare_data
    from rlhf.models import load_model, load_tokenizer

    from rlhf import reference

    tokenizer = load_tokenizer(spec.model)
    data = prepare_data(spec, tokenizer, run_config=config)
    extra_inputs = spec.spec.trainer_inputs(spec) if spec.spec.trainer_inputs else {}
    if "reward_funcs" in extra_inputs:
        from rlhf.usercode import check_reward_columns

        check_reward_columns(extra_inputs["reward_funcs"], list(spec.method.reward_funcs), data.train.column_names)
    model = load_model(spec.model, spec.hardware, quantized=spec.peft.adapter == "qlora")
    check_target_modules(spec, model)
    ref = reference.load(spec, reference.choose(spec))
    log.info("reference model: %s", ref.why)

    has_eval = data.eval is not None
    args = trl_arguments(spec, run_dir, has_eval)
    tracker = None
    if spec.logger.backend == "wandb":
        from rlhf import wandb_run

        tracker = wandb_run.start(spec.logger, run_dir, config)
    history = HistoryWriter(run_dir / rundir.HISTORY)
    trainer_kwargs: dict[str, Any] = dict(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer, callbacks=[history.callback, *(callbacks or [])],
        peft_config=peft_config(spec),
        **extra_inputs,
    )
    if spec.spec.reference_arg is not None:
        trainer_kwargs[spec.spec.reference_arg] = ref.model
    trainer, shared = build_trainer(spec, trainer_kwargs, data.path)
    del model, ref.model  # the trainer holds what it needs; a released reference is freed

    resume = latest_checkpoint(run_dir)
    if resume is None:
        (run_dir / rundir.HISTORY).unlink(missing_ok=True)
    else:
        log.info("resuming from %s", resume)
    train_result = trainer.train(resume_from_checkpoint=resume)
    if trainer.control.should_training_stop and trainer.state.global_step < trainer.state.max_steps:
        return {"stopped_at_step": trainer.state.global_step}  # preempted: saved, not finished
    metrics = final_metrics(spec, trainer, train_result, has_eval)
    held = models_in_memory()  # counted after training (same models), so the count costs no step time

    if trainer.is_world_process_zero():
        trainer.save_model(str(run_dir / rundir.MODEL_DIR))
        metrics.update(
            method=spec.method.kind,
            metric=spec.spec.metric,
            metric_value=metrics["eval"].get(spec.spec.metric, metrics["learning"].get(spec.spec.metric)),
            data={"cache": data.cache, "path": str(data.path), **data.report.__dict__},
            reference={"kind": ref.kind, "why": ref.why, "models_in_memory": held,
                       **({"precomputed": shared} if shared is not None else {})},
            seconds=round(time.perf_counter() - started, 2),
        )
        rundir.write_metrics(run_dir, metrics)
        if tracker is not None:
            from rlhf import wandb_run

            tracker.summary.update({"metric_value": metrics["metric_value"]})
            wandb_run.finish(tracker)
        rundir.mark_success(run_dir)
        log.info("finished: %s = %s; run dir %s", spec.spec.metric, metrics["metric_value"], run_dir)
    release(trainer)
    return metrics


def release(trainer: Any) -> None:
    """Free the job's models before the next job of an in-process sweep starts."""
    import gc

    import torch

    trainer.model = trainer.model_wrapped = None
    for name in ("ref_model", "accelerator"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
