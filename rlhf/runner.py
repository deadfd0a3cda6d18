"""Train one job from its run dir, top to bottom.

    config -> validate -> tokenizer -> data -> model (+ reference) -> TRL trainer -> train
           -> final eval -> save model -> metrics.json -> SUCCESS

The only input is `<run_dir>/config.yaml`, so the process Hydra started, an extra rank and a
SLURM task all run exactly this. No Hydra here.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from rlhf import rundir
from rlhf.config.validate import RunSpec, validate

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
    import torch

    threads = spec.hardware.torch_threads or spec.hardware.cpus_per_process
    torch.set_num_threads(threads)
    if not logging.getLogger().handlers:  # run outside Hydra (a rank, a test): log to stderr
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    log.setLevel(logging.INFO)
    import transformers

    transformers.logging.set_verbosity_warning()


def trl_arguments(spec: RunSpec, run_dir: Path, has_eval: bool) -> Any:
    """The TRL config of this run: the method's fields plus what the run and hardware decide."""
    kwargs = spec.spec.trl_kwargs(spec.method, has_eval)
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
                        f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

        self.callback = _Callback()


def reference_model(spec: RunSpec) -> tuple[Any, str]:
    """The reference model the method compares against, and why it is that one."""
    from rlhf.models import load_model

    if not spec.spec.uses_reference:
        return None, f"{spec.method.kind} uses no reference model"
    # TRL would otherwise reload model.config._name_or_path itself; loading it here, with the
    # policy's dtype and attention settings, makes the choice explicit and the copy identical.
    return load_model(spec.model, spec.hardware, "reference model"), (
        f"a separate frozen copy of {spec.model.name_or_path} (no adapter, so the policy cannot serve as its "
        "own reference)"
    )


def latest_checkpoint(run_dir: Path) -> str | None:
    directory = run_dir / rundir.CHECKPOINTS
    if not directory.is_dir():
        return None
    steps = [p for p in directory.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(steps, key=lambda p: int(p.name.split("-")[1]))) if steps else None


def final_metrics(trainer: Any, train_result: Any, has_eval: bool) -> dict[str, Any]:
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
    }


def run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    spec = validate(config)
    configure_process(spec)
    started = time.perf_counter()

    from rlhf.data.pipeline import prepare_data
    from rlhf.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(spec.model)
    data = prepare_data(spec, tokenizer, run_config=config)
    model = load_model(spec.model, spec.hardware)
    ref_model, why = reference_model(spec)
    log.info("reference model: %s", why)

    has_eval = data.eval is not None
    args = trl_arguments(spec, run_dir, has_eval)
    history = HistoryWriter(run_dir / rundir.HISTORY)
    trainer_kwargs: dict[str, Any] = dict(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer, callbacks=[history.callback],
    )
    if spec.spec.uses_reference:
        trainer_kwargs["ref_model"] = ref_model
    trainer = import_object(spec.spec.trl_trainer)(**trainer_kwargs)

    resume = latest_checkpoint(run_dir)
    if resume is None:
        (run_dir / rundir.HISTORY).unlink(missing_ok=True)
    else:
        log.info("resuming from %s", resume)
    train_result = trainer.train(resume_from_checkpoint=resume)
    metrics = final_metrics(trainer, train_result, has_eval)

    if trainer.is_world_process_zero():
        trainer.save_model(str(run_dir / rundir.MODEL_DIR))
        metrics.update(
            method=spec.method.kind,
            metric=spec.spec.metric,
            metric_value=metrics["eval"].get(spec.spec.metric),
            data={"cache": data.cache, **data.report.__dict__},
            reference=why,
            seconds=round(time.perf_counter() - started, 2),
        )
        rundir.write_metrics(run_dir, metrics)
        rundir.mark_success(run_dir)
        log.info("finished: %s = %s; run dir %s", spec.spec.metric, metrics["metric_value"], run_dir)
    return metrics
