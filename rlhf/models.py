"""Loading the policy, its reference and its tokenizer, the way a hub model loads.

`name_or_path` is passed to `from_pretrained` untouched: a hub id goes to the hub, a local
directory (the embedded tiny model included) is read from disk.
"""

from __future__ import annotations

import logging
from typing import Any

from rlhf.config.schema import HardwareConfig, ModelConfig
from rlhf.errors import RlhfError

log = logging.getLogger("rlhf")

_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _from_pretrained(loader: Any, what: str, name: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RlhfError(
            f"cannot load the {what} {name!r}: {first}. Give a local checkpoint directory or a hub id "
            "this machine can reach (offline? set HF_HUB_OFFLINE=1 and use a cached or local copy)"
        ) from None


def load_tokenizer(model: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    from rlhf.data.chat_templates import resolve_chat_template

    tokenizer = _from_pretrained(
        AutoTokenizer, "tokenizer", model.tokenizer or model.name_or_path,
        revision=model.revision, trust_remote_code=model.trust_remote_code,
    )
    if model.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(model.chat_template)
    if tokenizer.pad_token is None:
        # Padding is masked out everywhere; the EOS token is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_kwargs(model: ModelConfig, hardware: HardwareConfig, quantized: bool = False) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {"revision": model.revision, "trust_remote_code": model.trust_remote_code}
    if model.dtype != "auto":
        kwargs["dtype"] = getattr(torch, _TORCH_DTYPES[model.dtype])
    else:
        kwargs["dtype"] = "auto"
    if model.attn_implementation is not None:
        kwargs["attn_implementation"] = model.attn_implementation
    if quantized:  # QLoRA: NF4 weights, bf16 compute (validation made sure CUDA and bitsandbytes exist)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    return kwargs


def load_model(model: ModelConfig, hardware: HardwareConfig, what: str = "model", quantized: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs = model_kwargs(model, hardware, quantized)
    return _from_pretrained(AutoModelForCausalLM, what, model.name_or_path, **kwargs)
