"""What a finished run dir of rlhf.gpu_check must show beyond SUCCESS. A run that exits 0 and
writes SUCCESS can still have trained nothing, or something else than it was asked: a strategy
that fell back to another, weights the optimizer never moved (bf16 weights round small updates
away), a loss that went NaN, a saved model missing a layer. Each function below returns the
problems it finds in the run dir, as sentences ([] when it finds none):

- `strategy`: metrics.json `distributed` (how accelerate really set the ranks up) is the
  strategy config.yaml asked for, on as many processes; under FSDP, each decoder layer of the
  model is its own shard unit;
- `layout`: a run whose config asks for padding-free batches ran them packed (metrics.json
  `batches`), with no model call falling back to padding;
- `losses`: at least one training loss was logged, and every one is finite;
- `weights`: every trainable parameter changed, as TRL's own tests check it, by comparing the
  saved model with the starting one: each weight of a full model; each LoRA B matrix of an
  adapter (PEFT starts it at zero; its A matrix starts random and cannot be compared);
- `loads_back`: the saved model loads with no missing, unexpected or misshapen key and gives
  finite logits; an adapter loads with every adapter key, on its base;
- `generation`: the generation eval stage ran at the end and its figures are finite;
- `own_server`: the job started its own vLLM server (its log is in the run dir).

Everything here reads files on the CPU: the checking process takes no GPU memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.run import rundir

# accelerate's DistributedType for each hardware.distributed of a job of several processes.
ACCELERATE_TYPE = {"fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}


@dataclass(frozen=True)
class Expect:
    """What a check expects beyond what its config says."""

    generation: bool = True  # the generation eval stage ran at the end of the job
    own_server: bool = False  # the job started its own vLLM server


def findings(run_dir: Path, expect: Expect = Expect()) -> list[str]:
    """Every problem of a finished run dir (one that has SUCCESS), in the order above."""
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    metrics = rundir.read_metrics(run_dir)
    start = Path(config["model"]["name_or_path"])
    model_dir = run_dir / rundir.MODEL_DIR
    found = [*strategy(config["hardware"], metrics, decoder_layers(start)), *layout(config.get("method") or {}, metrics),
             *losses(history(run_dir), metrics),
             *weights(start, model_dir), *loads_back(model_dir)]
    if expect.generation:
        found += generation(metrics)
    if expect.own_server and not (run_dir / rundir.SERVER_LOG).is_file():
        found.append(f"the job started no vLLM server of its own (no {rundir.SERVER_LOG} in the run dir)")
    return found


def history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / rundir.HISTORY
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def decoder_layers(model_dir: Path) -> int | None:
    """The starting model's decoder layers (its config's num_hidden_layers), None if unknown."""
    path = Path(model_dir) / "config.json"
    return json.loads(path.read_text()).get("num_hidden_layers") if path.is_file() else None


def asked(hardware: dict[str, Any]) -> tuple[str, int]:
    """accelerate's DistributedType for the strategy `hardware` (config.yaml's block) asks for,
    and the number of processes."""
    world = int(hardware.get("nodes", 1)) * int(hardware.get("processes_per_node", 1))
    if world == 1:
        return "NO", 1
    kind = hardware.get("distributed")
    if kind in ACCELERATE_TYPE:
        return ACCELERATE_TYPE[kind], world
    return ("MULTI_GPU" if hardware.get("accelerator") == "cuda" else "MULTI_CPU"), world


def strategy(hardware: dict[str, Any], metrics: dict[str, Any], layers: int | None) -> list[str]:
    """metrics.json `distributed` against the strategy config.yaml asked for (see the module doc)."""
    ran = metrics.get("distributed")
    if not isinstance(ran, dict):
        return ["metrics.json records no `distributed` block: how the ranks ran is unknown"]
    kind, world = asked(hardware)
    said = f"hardware.distributed={hardware.get('distributed')} on {world} process{'es' if world > 1 else ''}"
    if (ran.get("type"), ran.get("processes")) != (kind, world):
        return [f"asked for {said} ({kind}), the ranks ran {ran.get('type')} on {ran.get('processes')} "
                "(metrics.json distributed): the strategy fell back"]
    if kind != "FSDP":
        return []
    units = ran.get("fsdp_units") or {}
    wrapped = sum(n for name, n in units.items() if name.endswith("DecoderLayer"))
    if ran.get("fsdp_version") != 2 or (layers is not None and wrapped != layers):
        return [f"FSDP ran as version {ran.get('fsdp_version')} with {wrapped} decoder layers of {layers} as shard "
                f"units (metrics.json distributed.fsdp_units: {units}); expected FSDP2, each layer a unit"]
    return []


def layout(method: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """metrics.json `batches` against the layout config.yaml asked for (see the module doc)."""
    if not method.get("padding_free"):
        return []
    ran = metrics.get("batches") or {}
    if ran.get("layout") != "padding_free":
        return [f"asked for method.padding_free=true, the batches ran {ran.get('layout')} ({ran.get('why')}; "
                "metrics.json batches): the layout fell back"]
    if ran.get("padded_calls") or not ran.get("packed_calls"):
        return [f"padding-free ran {ran.get('packed_calls')} model calls packed and {ran.get('padded_calls')} padded "
                f"({', '.join(ran.get('padded_because') or []) or 'no reason given'}; metrics.json batches)"]
    return []


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def losses(logged: list[dict], metrics: dict[str, Any]) -> list[str]:
    """Every logged training loss, and the run's train_loss, finite; at least one logged."""
    steps = [(h.get("step"), h["loss"]) for h in logged if "loss" in h]
    if not steps:
        return [f"no training loss was logged ({rundir.HISTORY})"]
    found = []
    bad = [(step, loss) for step, loss in steps if not finite(loss)]
    if bad:
        shown = ", ".join(f"step {step}: {loss}" for step, loss in bad[:5])
        found.append(f"{len(bad)} of {len(steps)} logged training losses are not finite ({shown}; {rundir.HISTORY})")
    total = (metrics.get("train") or {}).get("train_loss")
    if total is not None and not finite(total):
        found.append(f"metrics.json train.train_loss is {total}")
    return found


def tensors(model_dir: Path) -> dict[str, Any]:
    """Every tensor of the safetensors files in `model_dir` (a sharded save's shards too)."""
    from safetensors import safe_open

    found: dict[str, Any] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            found.update({key: handle.get_tensor(key) for key in handle.keys()})
    return found


def weights(start_dir: Path, model_dir: Path) -> list[str]:
    """Every trainable parameter changed from its start (see the module doc)."""
    import torch

    if not Path(model_dir).is_dir():
        return []  # loads_back says so
    saved = tensors(model_dir)
    if (Path(model_dir) / "adapter_config.json").is_file():
        lora_b = {k: v for k, v in saved.items() if "lora_B" in k}
        if not lora_b:
            return ["the saved adapter holds no LoRA B matrix"]
        unchanged = sorted(k for k, v in lora_b.items() if not torch.any(v != 0))
        what = f"{len(unchanged)} of {len(lora_b)} LoRA B matrices are still zero, their start"
    else:
        start = tensors(start_dir)
        common = sorted(set(start) & set(saved))
        if not common:
            return [f"no weight of the saved model is named as in the starting model {start_dir}"]
        unchanged = [k for k in common if torch.equal(start[k].float(), saved[k].float())]
        what = f"{len(unchanged)} of {len(common)} weights did not change from the starting model"
    if not unchanged:
        return []
    return [f"{what} (the optimizer did not move them): {', '.join(unchanged[:3])}"
            + (f" and {len(unchanged) - 3} more" if len(unchanged) > 3 else "")]


def generation(metrics: dict[str, Any]) -> list[str]:
    """The generation eval stage ran at the end, with finite figures."""
    block = metrics.get("generation")
    if not isinstance(block, dict):
        off = metrics.get("generation_off")
        return ["the generation eval did not run at the end of the job" + (f" ({off})" if off else "")]
    figures = block.get("metrics") or {}
    if not figures:
        return ["the generation eval recorded no figures (metrics.json generation.metrics)"]
    bad = {name: value for name, value in figures.items() if not finite(value)}
    return [f"generation eval figures not finite: {bad}"] if bad else []


def loads_back(model_dir: Path) -> list[str]:
    """The saved model (or adapter) loads back with every key, and gives finite logits."""
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the check's table is its process's output
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [f"no saved model: {model_dir} does not exist"]
    try:
        model, wrong = (load_adapter if (model_dir / "adapter_config.json").is_file() else load_full)(model_dir)
        if wrong:
            return ["the saved model does not load back as saved: " + "; ".join(
                f"{kind} {', '.join(map(str, sorted(keys, key=str)[:3]))}" for kind, keys in wrong.items())]
        with torch.no_grad():
            logits = model(torch.arange(8).unsqueeze(0) % model.config.vocab_size).logits
    except Exception as error:  # whatever loading raised is the finding
        text = f"{type(error).__name__}: {error}".strip().splitlines()
        return [f"the saved model does not load back: {text[-1] if text else type(error).__name__}"]
    return [] if torch.isfinite(logits).all() else ["the saved model's logits are not finite"]


def load_full(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """A full model, and what from_pretrained found wrong with its weights (missing, unexpected
    or misshapen keys, errors)."""
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True)
    return model, {kind: keys for kind, keys in info.items() if keys}


def load_adapter(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """An adapter on its base, and the adapter keys PEFT did not find in the files or did not
    expect (PeftModel.from_pretrained only warns of them; load_adapter returns them)."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    config = PeftConfig.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, dtype=torch.float32)
    model = PeftModel(base, config)
    result = model.load_adapter(str(model_dir), adapter_name="default")
    return model, {kind: keys for kind, keys in (("missing_keys", result.missing_keys),
                                                   ("unexpected_keys", result.unexpected_keys)) if keys}
