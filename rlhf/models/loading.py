"""Loading the policy, its reference and its tokenizer, the way a hub model loads.

`name_or_path` is passed to `from_pretrained` untouched: a local directory (the embedded tiny
model included) is read from disk, a hub id goes to the hub (through rlhf.core.hub's one probe).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rlhf.config.schema import SHARDED, HardwareConfig, ModelConfig
from rlhf.core.errors import RlhfError
from rlhf.models.heads import CAUSAL_LM

log = logging.getLogger("rlhf")

_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


CHECKPOINT_FIX = "Use a local checkpoint directory: model.name_or_path=<a local checkpoint dir>"


def from_pretrained(loader: Any, what: str, name: str, fix: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name)`; a failure is one message that ends with `fix`, the override
    to type. A hub id asks rlhf.core.hub first whether the hub can be reached, so an unreachable hub
    fails at once (or loads what the local cache holds) instead of waiting out the retries."""
    from rlhf.core import hub

    if Path(name).expanduser().is_dir():
        try:
            return loader.from_pretrained(name, **kwargs)
        except OSError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RlhfError(f"cannot load the {what} from the directory {name}: {first}. {fix}") from None
    state = hub.state()
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as error:
        raise RlhfError(hub.failure(what, name, fix, error, state, revision=kwargs.get("revision"),
                                    revision_key="model.revision")) from None


def load_tokenizer(model: ModelConfig) -> Any:
    """The run's tokenizer: model.tokenizer, else the checkpoint's own, with model.chat_template
    applied and a pad token when it has none.

    Args:
        model: the run's model block.

    Returns:
        The transformers tokenizer.

    Raises:
        RlhfError: it cannot be loaded; the message names the override that fixes it.
    """
    from transformers import AutoTokenizer

    from rlhf.models.chat_templates import resolve_chat_template

    if model.tokenizer:
        fix = "Use a local tokenizer directory: model.tokenizer=<a local tokenizer dir>"
    else:
        fix = f"{CHECKPOINT_FIX} (or model.tokenizer=<dir> for the tokenizer alone)"
    tokenizer = from_pretrained(
        AutoTokenizer, "tokenizer", model.tokenizer or model.name_or_path, fix,
        revision=model.revision, trust_remote_code=model.trust_remote_code,
    )
    if model.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(model.chat_template)
    if tokenizer.pad_token is None:
        # Padding is masked out everywhere; the EOS token is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# Why auto becomes float32 for a model whose weights all train (see weights_dtype).
FULL_WEIGHTS_FP32 = ("every weight trains: float32 weights, as TRL loads the models it trains; "
                     "hardware.precision=bf16/fp16 autocasts the compute")


def weights_dtype(model: ModelConfig, adapter: str | None) -> tuple[str, str]:
    """The dtype the checkpoint loads in, and why. model.dtype=auto keeps the checkpoint's own
    dtype (bf16 for most hub models) where the weights stay frozen (a LoRA/QLoRA base, a model
    only read); where they all train it is float32: AdamW updating bf16 weights in place rounds
    most updates at learning rates like 5e-7 to nothing (FSDP2 and DeepSpeed keep fp32 masters
    of bf16 weights; a single GPU or plain DDP has none). Measured (torch 2.13, 2026-12-06): one
    AdamW step at lr 5e-7 on weights of size ~0.02 changes 100% of fp32 weights and 1.2% of bf16
    ones, whose spacing there (~1e-4) is far above the step. `adapter` None: loaded to be read."""
    if model.dtype != "auto":
        return model.dtype, f"model.dtype={model.dtype}"
    if adapter == "none":
        return "float32", FULL_WEIGHTS_FP32
    return "auto", "the checkpoint's own dtype (model.dtype=auto)"


# The dtype hardware.precision autocasts the compute to.
PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def frozen_copy_dtype(model: ModelConfig, hardware: HardwareConfig, adapter: str | None) -> tuple[str, str]:
    """The dtype of a frozen copy of the policy (the reference model, loaded here or reloaded by
    TRL), and why. It trains nothing, so no update can round away: under bf16/fp16 autocast its
    weights are stored in that dtype, half the memory of the fp32 weights the policy trains
    (TRL would reload it in the policy's dtype: trl/trainer/dpo_trainer.py:924, grpo_trainer.py:1001,
    rloo_trainer.py:687). Without autocast (fp32) it is the policy's own, so a CPU run's reference
    equals its policy at step 0. model.dtype set explicitly wins."""
    if model.dtype == "auto" and hardware.precision in PRECISION_DTYPES:
        return PRECISION_DTYPES[hardware.precision], (f"a frozen copy under hardware.precision={hardware.precision}: "
                                                      "stored in the dtype its compute is cast to")
    return weights_dtype(model, adapter)


def saved_dtype(model: ModelConfig, hardware: HardwareConfig, adapter: str) -> str | None:
    """The dtype the trained model is saved in (None: the dtype it trained in). Weights that all
    trained in float32 because model.dtype=auto (weights_dtype) under bf16/fp16 autocast are
    saved in that autocast dtype, which a user loads them with: half the disk, and half the
    memory of the generation eval that reads them back. An adapter is saved as it trained;
    an explicit model.dtype is kept."""
    if weights_dtype(model, adapter)[1] != FULL_WEIGHTS_FP32:
        return None
    return PRECISION_DTYPES.get(hardware.precision)


def torch_dtype(name: str) -> Any:
    """`name` (float32, bfloat16, float16 or auto) as from_pretrained's dtype argument."""
    import torch

    return "auto" if name == "auto" else getattr(torch, _TORCH_DTYPES[name])


def model_kwargs(model: ModelConfig, hardware: HardwareConfig, adapter: str | None = None,
                 environ: Any = None, dtype: str | None = None) -> dict[str, Any]:
    """from_pretrained's arguments for `model`, trained with `adapter` (None: only read), in
    `dtype` when given (else weights_dtype's)."""
    import os

    import torch

    environ = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {"revision": model.revision, "trust_remote_code": model.trust_remote_code}
    kwargs["dtype"] = torch_dtype(dtype or weights_dtype(model, adapter)[0])
    if model.attn_implementation is not None:
        kwargs["attn_implementation"] = model.attn_implementation
    if adapter == "qlora":  # NF4 weights, bf16 compute (validation made sure CUDA and bitsandbytes exist)
        from transformers import BitsAndBytesConfig

        quantization: dict[str, Any] = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                            bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
        if hardware.distributed in SHARDED:  # the strategy flattens, shards and places the weights
            # Packed 4-bit weights stored as bf16 can be flattened and sharded like the rest;
            # the unquantized parts load in the same dtype. The strategy places the shards.
            quantization["bnb_4bit_quant_storage"] = torch.bfloat16
            kwargs["dtype"] = torch.bfloat16
        else:
            # bitsandbytes puts a 4-bit model on the GPU it is loaded on: this rank's own
            # (devices restricted CUDA_VISIBLE_DEVICES to the node's training GPUs), not GPU 0;
            # the one accelerate picks, LOCAL_RANK modulo the visible GPUs (accelerate/state.py:843),
            # which is 0 where SLURM binds each task to its own GPU (--gpus-per-task).
            local = int(environ.get("LOCAL_RANK", "0"))
            visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
            kwargs["device_map"] = {"": local % len(visible) if visible else local}
        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization)
    return kwargs


def load_model(model: ModelConfig, hardware: HardwareConfig, what: str = "model", adapter: str | None = None,
               head: str = CAUSAL_LM, pad_token_id: int | None = None, seed: int | None = None,
               dtype: tuple[str, str] | None = None) -> Any:
    """The checkpoint with the head a method trains (MethodSpec.model_head): its language-model
    head, or a new one-label classification head that scores a text (a reward model; loaded
    after seeding with `seed`, so the head's random init is the run's, as TRL's
    RewardTrainer does; its `pad_token_id` lets it find each row's last token).

    Args:
        model, hardware: the run's model and hardware blocks (dtype, attention, device).
        what: how messages and the log name it (policy, reference model, ...).
        adapter: peft.adapter of the run that trains it (None: a model only read), which
            decides the weights' dtype and quantisation: see model_kwargs.
        head: rlhf.models.heads.CAUSAL_LM or SEQUENCE_CLASSIFICATION.
        pad_token_id, seed: for a classification head, as above.
        dtype: (dtype, why) instead of weights_dtype's (a frozen copy: frozen_copy_dtype).

    Returns:
        The transformers model, in train mode as from_pretrained leaves it.

    Raises:
        RlhfError: it cannot be loaded; the message names the override that fixes it.
    """
    from transformers import AutoModelForCausalLM

    kwargs = model_kwargs(model, hardware, adapter, dtype=dtype[0] if dtype else None)
    if adapter is not None or dtype is not None:
        log.info("%s: %s weights (%s)", what, *(dtype or weights_dtype(model, adapter)))
    if head == CAUSAL_LM:
        return from_pretrained(AutoModelForCausalLM, what, model.name_or_path, CHECKPOINT_FIX, **kwargs)
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    if seed is not None:
        set_seed(seed)
    # A causal LM checkpoint has no score head (made here) and an lm_head (dropped): expected.
    with suppress_seqcls_warning():
        loaded = from_pretrained(AutoModelForSequenceClassification, what, model.name_or_path, CHECKPOINT_FIX,
                                 num_labels=1, **kwargs)
    if pad_token_id is not None:
        loaded.config.pad_token_id = pad_token_id
    return loaded


def layout(loaded: Any) -> dict[str, Any]:
    """What another rank needs to build `loaded`'s skeleton exactly (load_skeleton): each
    parameter's and buffer's dtype, and the train/eval mode."""
    tensors = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    return {"dtypes": {name: str(t.dtype).removeprefix("torch.") for name, t in tensors.items()},
            "training": loaded.training, "config_dtype": str(loaded.config.dtype).removeprefix("torch.")}


def load_skeleton(model: ModelConfig, shape: dict[str, Any], what: str = "model", head: str = CAUSAL_LM,
                  pad_token_id: int | None = None) -> Any:
    """The model `load_model` loads, without reading its weights: its structure from the
    checkpoint's config, every parameter an uninitialised CPU tensor (torch.empty: its pages are
    never written, so the process holds no memory for them), each in the dtype `shape` gives
    (rank 0's `layout`); buffers computed as the model's __init__ computes them (the rotary
    frequencies, which are not in a checkpoint), the generation config the checkpoint's.

    The ranks other than 0 of an FSDP job build this while rank 0 loads the checkpoint:
    accelerate's cpu_ram_efficient_loading then shards every rank's model on the meta device
    and broadcasts rank 0's weights into the shards (accelerate/utils/fsdp_utils.py:830-853 and
    887-896, fsdp2_load_full_state_dict at 574-660). Its parameters are real tensors, not meta
    ones, because accelerate maps each parameter to its shard by `data_ptr()`
    (accelerator.py:1713-1765), which is 0 for every meta tensor."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = from_pretrained(AutoConfig, what, model.name_or_path, CHECKPOINT_FIX, revision=model.revision,
                             trust_remote_code=model.trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if model.attn_implementation is not None:
        kwargs["attn_implementation"] = model.attn_implementation
    if head == CAUSAL_LM:
        auto: Any = AutoModelForCausalLM
    else:
        auto, config.num_labels = AutoModelForSequenceClassification, 1
    with init_empty_weights(include_buffers=False):
        built = auto.from_config(config, **kwargs)
    built.tie_weights()  # as from_pretrained does: a tied weight is then one parameter, as in `shape`
    dtypes = shape["dtypes"]
    made: dict[int, Any] = {}  # a tied parameter is one tensor in two modules: made once, under its first name
    for prefix, module in built.named_modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if id(param) not in made:
                dtype = getattr(torch, dtypes[f"{prefix}.{name}" if prefix else name])
                made[id(param)] = torch.nn.Parameter(torch.empty(param.shape, dtype=dtype, device="cpu"),
                                                     requires_grad=param.requires_grad)
            module._parameters[name] = made[id(param)]
    for name, buffer in built.named_buffers():
        if name in dtypes and str(buffer.dtype).removeprefix("torch.") != dtypes[name]:
            owner, _, leaf = name.rpartition(".")
            built.get_submodule(owner)._buffers[leaf] = buffer.to(getattr(torch, dtypes[name]))
    if built.can_generate():
        built.generation_config = saved_generation_config(model) or built.generation_config
    if pad_token_id is not None:
        built.config.pad_token_id = pad_token_id
    built.config.dtype = getattr(torch, shape["config_dtype"])
    return built.train(shape["training"])


def saved_generation_config(model: ModelConfig) -> Any:
    """The checkpoint's own generation_config.json, or None when it has none (from_pretrained then
    keeps the one made from the model config, as the skeleton already has)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model.name_or_path, revision=model.revision)
    except OSError:
        return None
