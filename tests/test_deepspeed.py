"""DeepSpeed and vLLM as installed extras: every ZeRO option's generated config is one DeepSpeed's
own config class accepts, after the Trainer has filled its "auto" values; a DeepSpeed strategy
without DeepSpeed installed is one message before anything starts; the vllm extra is the range
TRL supports."""

from __future__ import annotations

import configparser
import copy
import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import REPO, TINY_MODEL
from rlhf.cluster import distributed
from rlhf.config.checks import DEEPSPEED_EXTRA, check_deepspeed
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError
from rlhf.core.usercode import import_object

# Each ZeRO hardware option (conf/hardware/) and the stage it asks for.
ZERO_OPTIONS = {"gpu_zero2_8": 2, "gpu_zero3_8": 3}
# Sections of a DeepSpeed config, by the attribute DeepSpeedConfig parses each into; any other
# top-level key is parsed into the attribute of its own name.
SECTIONS = {"bf16": "bfloat16_config", "fp16": "float16_config", "zero_optimization": "zero_config"}


@pytest.fixture
def no_global_deepspeed_state():
    """HfTrainerDeepSpeedConfig registers itself process-wide (from_pretrained would then build
    every model under ZeRO-3): cleared after each test, so no later test of this process sees it."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    yield
    unset_hf_deepspeed_config()
    assert not is_deepspeed_zero3_enabled()


def trainer_filled(run: Any, output_dir: str) -> dict:
    """The run's DeepSpeed config as the HF Trainer hands it to DeepSpeed: its method's TRL
    config built with the strategy's settings (rlhf.cluster.distributed.trl_kwargs) — on the CPU, the
    one difference from the GPU machine — whose "auto" values transformers fills when the
    arguments are made (HfTrainerDeepSpeedConfig.trainer_config_process) and when the model and
    the step count are known (trainer_config_finalize)."""
    from transformers import AutoConfig

    strategy = distributed.trl_kwargs(run.hardware)
    config_class = import_object(run.spec.trl_config)
    args = config_class(**run.spec.trl_kwargs(run.method, has_eval=False), output_dir=output_dir, use_cpu=True,
                        bf16=run.hardware.precision == "bf16", report_to=[], deepspeed=strategy["deepspeed"])
    hf_config = args.hf_deepspeed_config
    hf_config.trainer_config_finalize(args, SimpleNamespace(config=AutoConfig.from_pretrained(TINY_MODEL)),
                                      num_training_steps=10)
    return hf_config.config


def leaves(config: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def deepspeed_reads(config: dict) -> Any:
    """DeepSpeed's own parse of `config` (its pydantic sections refuse an unknown key or a bad
    value), then every value of `config` read back from the parse: DeepSpeed ignores a top-level
    key it does not know, so a misspelled one fails here instead."""
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig(copy.deepcopy(config))
    for key, value in config.items():
        attribute = SECTIONS.get(key, key)
        assert hasattr(parsed, attribute), f"DeepSpeed reads no top-level key {key!r}"
        read = getattr(parsed, attribute)
        if isinstance(value, dict):
            dumped = read.model_dump(by_alias=True)
            for inner, inner_value in value.items():
                read_inner = dumped.get(inner)
                assert read_inner == inner_value, f"{key}.{inner}={inner_value!r}: DeepSpeed read {read_inner!r}"
        else:
            assert read == value, f"{key}={value!r}: DeepSpeed read {read!r}"
    return parsed


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("option", sorted(ZERO_OPTIONS))
def test_every_zero_option_makes_a_config_deepspeed_accepts(option, precision, tmp_path, no_global_deepspeed_state):
    run = validate(compose_job([f"hardware={option}", f"hardware.precision={precision}"]))
    filled = trainer_filled(run, str(tmp_path))
    assert "auto" not in leaves(filled).values(), leaves(filled)  # the Trainer filled every "auto"
    parsed = deepspeed_reads(filled)
    assert parsed.zero_optimization_stage == ZERO_OPTIONS[option]
    assert parsed.bfloat16_config.enabled is (precision == "bf16") and not parsed.float16_config.enabled
    method = run.method
    assert parsed.train_micro_batch_size_per_gpu == method.micro_batch_size
    assert parsed.gradient_accumulation_steps == method.gradient_accumulation_steps
    assert parsed.gradient_clipping == method.max_grad_norm
    if ZERO_OPTIONS[option] == 3:  # trainer.save_model writes whole weights, not empty shards
        assert parsed.zero_config.gather_16bit_weights_on_model_save


def test_the_check_above_fails_on_a_bad_key_or_value(tmp_path, no_global_deepspeed_state):
    """What the test above would say of a broken strategy config (tried once by hand on each
    kind of mistake: DeepSpeed's parse refuses the first three, the read-back the fourth)."""
    from pydantic import ValidationError

    good = trainer_filled(validate(compose_job(["hardware=gpu_zero3_8"])), str(tmp_path))
    deepspeed_reads(good)
    broken = copy.deepcopy(good)
    broken["zero_optimization"]["stage3_gather_16bit_weights_on_model_sav"] = True  # a misspelled key
    with pytest.raises(ValidationError, match="stage3_gather_16bit_weights_on_model_sav"):
        deepspeed_reads(broken)
    broken = copy.deepcopy(good)
    broken["zero_optimization"]["stage"] = 5  # no such stage
    with pytest.raises(ValidationError):
        deepspeed_reads(broken)
    broken = copy.deepcopy(good)
    broken["train_batch_size"] += 1  # not micro batch x accumulation x world size
    with pytest.raises(AssertionError, match="train_batch_size is not equal"):
        deepspeed_reads(broken)
    broken = copy.deepcopy(good)
    broken["gradient_clip"] = 1.0  # a top-level key DeepSpeed silently ignores
    with pytest.raises(AssertionError, match="reads no top-level key 'gradient_clip'"):
        deepspeed_reads(broken)


def hide_deepspeed(monkeypatch) -> None:
    """This environment as one without DeepSpeed, for the check's find_spec (the package stays
    installed: the tests above need it)."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "deepspeed" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_deepspeed_strategy_without_deepspeed_is_one_message_before_anything_runs(tmp_path, monkeypatch):
    from rlhf.launch.cli import preflight

    zero3 = validate(compose_job(["hardware=gpu_zero3_8"]))
    assert check_deepspeed(zero3) == []  # installed here (the dev extra)
    hide_deepspeed(monkeypatch)
    assert check_deepspeed(zero3) == [
        "hardware.distributed=deepspeed_zero3 trains with DeepSpeed, which is not installed here: "
        "pip install -e '.[deepspeed]' (on the machine that trains), or use hardware.distributed=fsdp"]
    assert DEEPSPEED_EXTRA == "pip install -e '.[deepspeed]'"
    # One process uses no strategy (rlhf.cluster.distributed.trl_kwargs sets none), so needs no DeepSpeed.
    one = validate(compose_job(["hardware=gpu_zero2_8", "hardware.processes_per_node=1"]))
    assert set(distributed.trl_kwargs(one.hardware)) == {"activation_checkpointing"}  # no strategy keys
    assert check_deepspeed(one) == []
    # Found by the command's preflight, where the job trains, beside any other machine problem.
    with pytest.raises(ConfigError) as raised:
        preflight(["hardware=gpu_zero2_8", f"cache_dir={tmp_path / 'cache'}"])
    assert any("deepspeed_zero2 trains with DeepSpeed" in p and DEEPSPEED_EXTRA in p for p in raised.value.problems)
    # Not on the machine that trains: with hydra/launcher=slurm the jobs train elsewhere. (As
    # from a login node, where sbatch is: without it, the sweep is refused for that instead,
    # whether or not this machine has SLURM installed yet.)
    monkeypatch.setattr("rlhf.launch.cli.sbatch_on_path", lambda: True)
    run = preflight(["-m", "hydra/launcher=slurm", "hardware=gpu_zero2_8", f"cache_dir={tmp_path / 'cache'}"])
    assert run.hardware.distributed == "deepspeed_zero2"


def extras() -> dict[str, list[str]]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return {name: [line for line in value.splitlines() if line.strip()]
            for name, value in parser["options.extras_require"].items()}


def test_the_vllm_extra_is_trls_supported_range():
    """TRL 1.16 supports vLLM 0.22.0 to 0.31.0 (trl/import_utils.py:is_vllm_available warns
    outside it; TRL's own `vllm` extra pins it): ours is the same range, from TRL's metadata."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    ours = [Requirement(line) for line in extras()["vllm"]]
    trls = [Requirement(r) for r in requires("trl") if r.startswith("vllm") and 'extra == "vllm"' in r]
    assert [r.name for r in ours] == ["vllm"] and len(trls) == 1
    assert ours[0].specifier == trls[0].specifier
    assert "0.22.0" in ours[0].specifier and "0.31.0" in ours[0].specifier
    assert "0.21.9" not in ours[0].specifier and "0.32.0" not in ours[0].specifier


def test_deepspeed_is_an_extra_and_installed_with_the_dev_one():
    from importlib.metadata import version

    from packaging.requirements import Requirement

    ours = Requirement(extras()["deepspeed"][0])
    assert ours.name == "deepspeed" and ours in [Requirement(line) for line in extras()["dev"]]
    assert version("deepspeed") in ours.specifier  # make test installs the dev extra
