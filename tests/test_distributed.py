"""Multi-process strategies: the Trainer settings each one gets (FSDP2 through accelerate, FSDP's
own activation checkpointing, DeepSpeed)."""

from __future__ import annotations

import logging
import warnings

import pytest

from rlhf import distributed
from rlhf.config.compose import compose_job
from rlhf.config.validate import validate


def hardware(option: str, *overrides: str):
    return validate(compose_job([f"hardware={option}", *overrides])).hardware


# option -> (processes, backend, strategy). gpu_fsdp_2x8 (two nodes) takes the same path as
# one node: only the process count differs.
OPTIONS = {
    "cpu": (1, None, "none"), "gpu": (1, None, "none"),
    "cpu_2proc": (2, "gloo", "ddp"), "gpu_ddp_8": (8, "nccl", "ddp"),
    "gpu_fsdp_8": (8, "nccl", "fsdp"), "gpu_fsdp_2x8": (16, "nccl", "fsdp"),
    "gpu_zero2_8": (8, "nccl", "deepspeed_zero2"), "gpu_zero3_8": (8, "nccl", "deepspeed_zero3"),
}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_strategy_gets_its_trainer_settings(option, checkpointing):
    processes, backend, strategy = OPTIONS[option]
    hw = hardware(option, f"hardware.activation_checkpointing={str(checkpointing).lower()}")
    assert (hw.world_size, hw.distributed) == (processes, strategy)
    kwargs = distributed.trl_kwargs(hw)
    assert kwargs.get("ddp_backend") == backend
    if strategy == "fsdp":
        # FSDP2, the boolean switch (the string form is deprecated), layers found by accelerate
        # from the model's _no_split_modules (no class named), FSDP's own checkpointing and
        # never the Trainer's (an extra all-gather in backward), no FSDP1-only key.
        assert kwargs["fsdp"] is True and kwargs["activation_checkpointing"] is False
        assert kwargs["fsdp_config"] == {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                         "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT",
                                         "activation_checkpointing": checkpointing}
        assert "deepspeed" not in kwargs
    else:
        assert "fsdp" not in kwargs and "fsdp_config" not in kwargs
        assert kwargs["activation_checkpointing"] is checkpointing
    if strategy.startswith("deepspeed"):
        zero = kwargs["deepspeed"]["zero_optimization"]
        assert zero["stage"] == int(strategy[-1])
        if strategy == "deepspeed_zero3":  # the final save gathers 16-bit weights (all ranks save)
            assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    else:
        assert "deepspeed" not in kwargs


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _build_config(tmp_path, kwargs) -> tuple:
    """A real DPOConfig from `kwargs` on this CPU machine, and every warning it gave: Python's
    and those transformers logs (its FSDP deprecations are logged, not warned)."""
    from trl import DPOConfig

    captured = _Captured()
    logger = logging.getLogger("transformers")
    logger.addHandler(captured)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kwargs)
    finally:
        logger.removeHandler(captured)
    return args, captured.messages + [str(w.message) for w in caught]


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("option", ["cpu_2proc", "gpu_ddp_8", "gpu_fsdp_8", "gpu_fsdp_2x8"])
def test_the_settings_build_a_trl_config_without_deprecation_warnings(tmp_path, option, checkpointing):
    """On this CPU machine, for CPU and GPU options alike (use_cpu only picks the device).
    DeepSpeed's are left out: building its config needs deepspeed installed."""
    hw = hardware(option, f"hardware.activation_checkpointing={str(checkpointing).lower()}")
    kwargs = distributed.trl_kwargs(hw)
    # ddp_backend only names the backend of the process group, which this one process has not
    # started (the Trainer's accelerate state would then look for one).
    assert kwargs.pop("ddp_backend") in ("gloo", "nccl")
    args, messages = _build_config(tmp_path, kwargs)
    noted = [m for m in messages if any(w in m.lower() for w in ("deprecat", "prefer", "fsdp"))]
    assert not noted, noted
    if hw.distributed == "fsdp":
        plugin = args.fsdp_plugin_args
        assert plugin["fsdp_version"] == 2 and plugin["activation_checkpointing"] is checkpointing
        assert "use_orig_params" not in plugin and "transformer_cls_names_to_wrap" not in plugin
        assert args.activation_checkpointing is False
    else:
        assert args.fsdp_plugin_args is None and args.activation_checkpointing is checkpointing


def test_the_old_fsdp_settings_are_caught_by_the_same_check(tmp_path):
    """What trl_kwargs gave before (the string form, FSDP1's use_orig_params, the Trainer's
    checkpointing beside FSDP): the capture above sees its deprecation and advice."""
    _, messages = _build_config(tmp_path, dict(fsdp="full_shard auto_wrap", activation_checkpointing=True,
                                                fsdp_config={"use_orig_params": True}))
    assert any("Passing `fsdp` as a string is deprecated" in m for m in messages), messages
    assert any("prefer `fsdp_config['activation_checkpointing']`" in m for m in messages), messages
