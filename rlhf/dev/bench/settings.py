"""What each side of a comparison ran with, read from what ran: threads, batch, precision,
optimizer, attention kernel and data workers, so that a table can show the baseline was given
what the platform had.

The plain TRL scripts call `trainer_settings` on their trainer just before it trains; the
platform's side is read from its run dir afterwards (`run_settings`): the TRL config the job
trained with (model/training_args.bin), its resolved config and its log. Both give the same keys.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

DEFAULT_ATTENTION = "default"  # no attn_implementation asked for: transformers' choice for the model
KEYS = ("threads", "batch", "accumulation", "precision", "optimizer", "attention", "data_workers")


def precision(args: Any, dtype: str) -> str:
    """Mixed precision when the TRL config asks for it, else the weights' dtype (float32, ...)."""
    if getattr(args, "bf16", False):
        return "bf16 mixed"
    if getattr(args, "fp16", False):
        return "fp16 mixed"
    return dtype.removeprefix("torch.")


def from_args(args: Any) -> dict[str, Any]:
    """The keys a TRL config decides."""
    optim = getattr(args.optim, "value", args.optim)
    return {"batch": args.per_device_train_batch_size, "accumulation": args.gradient_accumulation_steps,
            "optimizer": str(optim)}


def trainer_settings(trainer: Any, attention: str | None) -> dict[str, Any]:
    """A plain script's trainer, as it is about to train. `attention`: what the script asked
    from_pretrained for (None: nothing); the kernel transformers chose is kept beside it. Data
    workers: the config's dataset_num_proc (unset: TRL maps the dataset in this one process)."""
    import torch

    chosen = getattr(trainer.model.config, "_attn_implementation", None)
    return {**from_args(trainer.args), "threads": torch.get_num_threads(),
            "precision": precision(trainer.args, str(trainer.model.dtype)),
            "attention": attention or DEFAULT_ATTENTION, "attention_chosen": chosen,
            "data_workers": getattr(trainer.args, "dataset_num_proc", None) or 1}


# The data stage's closing line of a source: "... formatted and tokenized in 3.1 s (... 2 processes)".
WORKERS_LINE = re.compile(r"formatted and tokenized in .*?(\d+) process(?:es)?\)")


def run_settings(run_dir: Path) -> dict[str, Any]:
    """The platform's side, from a finished run dir: the TRL config it trained with, the threads
    and attention its config asked for, and the worker processes its data stage used (None on
    a data cache hit: nothing was tokenized)."""
    import torch

    from rlhf.run.files import MODEL_DIR, read_config

    run_dir = Path(run_dir)
    with warnings.catch_warnings():  # unpickling an experimental trainer's config warns that it is experimental
        warnings.simplefilter("ignore")
        args = torch.load(run_dir / MODEL_DIR / "training_args.bin", weights_only=False)
    config = read_config(run_dir)
    hardware, model = config["hardware"], config["model"]
    dtype = json.loads((run_dir / MODEL_DIR / "config.json").read_text()).get("dtype", model.get("dtype"))
    workers = [int(n) for n in WORKERS_LINE.findall((run_dir / "train.log").read_text())]
    return {**from_args(args), "threads": hardware["torch_threads"] or hardware["cpus_per_process"],
            "precision": precision(args, str(dtype)),
            "attention": model.get("attn_implementation") or DEFAULT_ATTENTION,
            "data_workers": max(workers) if workers else None}


def described(settings: dict[str, Any]) -> str:
    """One side's settings in a few words: `1 thread, batch 16, float32, adamw_torch_fused,
    attention default`."""
    threads = settings["threads"]
    parts = [f"{threads} thread{'s' if threads != 1 else ''}",
             f"batch {settings['batch']}" + (f"x{settings['accumulation']}" if settings["accumulation"] != 1 else ""),
             settings["precision"], settings["optimizer"], f"attention {settings['attention']}"]
    if settings.get("attention_chosen"):
        parts[-1] += f" ({settings['attention_chosen']})"
    if settings.get("data_workers") is not None:
        parts.append(f"{settings['data_workers']} data worker{'s' if settings['data_workers'] != 1 else ''}")
    return ", ".join(parts)


def compared(platform: dict[str, Any], plain: dict[str, Any], keys: tuple[str, ...] = KEYS) -> str:
    """Both sides' settings: once when they agree on every key, else each side, and the keys they
    differ on, so that a handicapped baseline shows in the table."""
    differ = [key for key in keys if platform.get(key) != plain.get(key)]
    if not differ:
        return f"both: {described(plain)}"
    return f"platform: {described(platform)}; TRL: {described(plain)} (differ: {', '.join(differ)})"


def settings_lines(settings: list[tuple[str, str]], what: str) -> list[str]:
    """`compared` for each row of a table: one sentence when every row's sides ran alike, else a
    line per row."""
    if len({text for _, text in settings}) == 1:
        return [f"{what}, {settings[0][1]}."]
    return [f"{what}:", "", *(f"- {key}: {text}" for key, text in settings)]
