"""GPU-path choices asserted without a GPU: the dtype a trained model loads in, where a 4-bit
model goes per strategy and rank, what TRL needs to reload the policy itself, and what the
shared reference log-probs are keyed by and who decides their reuse."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import TINY_MODEL
from rlhf.launch.compose import compose_job
from rlhf.config.schema import HardwareConfig, ModelConfig
from rlhf.config.validate import validate


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory) -> Path:
    """The tiny model saved in bf16, as most hub checkpoints are."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("bf16")
    AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.bfloat16).save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY_MODEL).save_pretrained(path)
    return path


def test_weights_that_all_train_load_in_fp32_and_frozen_ones_as_stored(bf16_checkpoint):
    import torch

    from rlhf.models.loading import load_model

    model = ModelConfig(name_or_path=str(bf16_checkpoint))
    hardware = HardwareConfig()

    def dtypes(config, adapter):
        return {p.dtype for p in load_model(config, hardware, adapter=adapter).parameters()}

    assert dtypes(model, "none") == {torch.float32}  # full fine-tuning: fp32 weights, as TRL loads them
    assert dtypes(model, "lora") == {torch.bfloat16}  # a frozen base keeps the checkpoint's dtype
    assert dtypes(model, None) == {torch.bfloat16}  # a model only read, too
    assert dtypes(dataclasses.replace(model, dtype="bfloat16"), "none") == {torch.bfloat16}  # asked for


@pytest.mark.parametrize("strategy,local_rank", [("none", "0"), ("ddp", "3"), ("fsdp", "1"), ("deepspeed_zero3", "1"),
                                                  ("deepspeed_zero2", "2")])
def test_a_4bit_model_goes_on_its_ranks_gpu_or_is_stored_to_shard(strategy, local_rank):
    import torch

    from rlhf.models.loading import model_kwargs

    hardware = HardwareConfig(accelerator="cuda", precision="bf16", gpus_per_node=4,
                              processes_per_node=1 if strategy == "none" else 4, distributed=strategy)
    kwargs = model_kwargs(ModelConfig(), hardware, "qlora", environ={"LOCAL_RANK": local_rank})
    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    if strategy in ("fsdp", "deepspeed_zero3"):
        # sharded: bf16 storage the strategy can flatten, no device_map (the strategy places shards)
        assert quantization.bnb_4bit_quant_storage == torch.bfloat16 and kwargs["dtype"] == torch.bfloat16
        assert "device_map" not in kwargs
    else:
        # bitsandbytes would put every rank's model on GPU 0; accelerate then refuses it
        assert kwargs["device_map"] == {"": int(local_rank)}
        assert quantization.bnb_4bit_quant_storage == torch.uint8


@pytest.mark.parametrize("method", ["dpo", "grpo", "rloo", "kto"])
def test_trl_reloads_the_policy_at_its_revision_and_with_its_remote_code(method, tmp_path):
    """GRPO/RLOO with beta > 0 and DPO's precompute under FSDP load the policy's checkpoint
    again inside TRL, from args.model_init_kwargs and args.trust_remote_code."""
    from rlhf.job.runner import trl_arguments

    run = validate(compose_job([f"method={method}", "model.trust_remote_code=true"]))
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, revision="3f2a1c"))
    args = trl_arguments(run, tmp_path, has_eval=False)
    assert args.trust_remote_code is True
    assert args.model_init_kwargs == {"revision": "3f2a1c"}
    plain = trl_arguments(validate(compose_job([f"method={method}"])), tmp_path, has_eval=False)
    assert plain.model_init_kwargs is None and plain.trust_remote_code is False


def test_trls_ignored_kwargs_warning_is_dropped_only_for_that_message():
    import logging

    from rlhf.job.runner import RELOAD_ONLY

    def record(message):
        return logging.LogRecord("trl.trainer.grpo_trainer", logging.WARNING, __file__, 0, message, (), None)

    assert not RELOAD_ONLY.filter(record("You passed `model_init_kwargs` to the `GRPOConfig`, but your model is "
                                         "already instantiated. The `model_init_kwargs` will be ignored."))
    assert RELOAD_ONLY.filter(record("You passed `quantization_config` to the trainer"))


# ---------------------------------------------------------------------------- shared reference log-probs

def test_the_shared_reference_key_holds_what_changes_the_values():
    from trl import DPOConfig

    from rlhf.trl.shared_reference import store_key

    def key(attention="sdpa", **fields):
        args = DPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, **fields)
        return store_key("train", "hash", 100, args, attention)

    base = key()
    for changed in (key(ld_alpha=0.5), key(max_length=512), key(padding_free=True), key(attention="eager"),
                    key(truncation_mode="keep_end")):
        assert changed != base
    assert key(beta=0.5, loss_type=["ipo"]) == base  # the loss reads them, the reference log-probs do not
    assert store_key("eval", "hash", 100, DPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False),
                     "sdpa") != base


def test_rank_zero_decides_reuse_for_every_rank(tmp_path):
    from rlhf.trl.shared_reference import rank_zero_sees

    written = tmp_path / "key"
    written.mkdir()
    (written / "dataset_info.json").write_text("{}")  # a concurrent job finished writing just now

    def from_rank_zero_that_saw_nothing(found, from_process):
        assert from_process == 0
        found[0] = False

    # This rank sees the store, rank 0 did not: both compute, through TRL's collectives together.
    assert rank_zero_sees(written, broadcast=from_rank_zero_that_saw_nothing) is False
    assert rank_zero_sees(written, broadcast=lambda found, from_process: None) is True
    assert rank_zero_sees(tmp_path / "absent", broadcast=lambda found, from_process: None) is False
