"""Multi-process strategies: the Trainer settings each one gets (FSDP2 through accelerate, FSDP's
own activation checkpointing, DeepSpeed), the order in which a rank builds them and its models,
and FSDP training for real on two CPU ranks (gloo), through the CLI, against one process on the
same global batch."""

from __future__ import annotations

import json
import logging
import warnings
from types import SimpleNamespace

import pytest

from conftest import TINY_MODEL, read_history, train

from rlhf.cluster import distributed
from rlhf.launch.compose import compose_job, resolved_config
from rlhf.config.validate import validate


def hardware(option: str, *overrides: str):
    return validate(compose_job([f"hardware={option}", *overrides])).hardware


# option -> (processes, backend, strategy). gpu_fsdp_2x8 (two nodes) takes the same path as
# one node: only the process count differs.
OPTIONS = {
    "cpu": (1, None, "none"), "gpu": (1, None, "none"),
    "cpu_2proc": (2, "gloo", "ddp"), "gpu_ddp_8": (8, "nccl", "ddp"),
    "cpu_2proc_fsdp": (2, "gloo", "fsdp"), "gpu_fsdp_8": (8, "nccl", "fsdp"), "gpu_fsdp_2x8": (16, "nccl", "fsdp"),
    "gpu_zero2_8": (8, "nccl", "deepspeed_zero2"), "gpu_zero3_8": (8, "nccl", "deepspeed_zero3"),
}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_strategy_gets_its_trainer_settings(option, checkpointing):
    processes, backend, strategy = OPTIONS[option]
    hw = hardware(option, f"hardware.activation_checkpointing={str(checkpointing).lower()}")
    assert (hw.world_size, hw.distributed) == (processes, strategy)
    kwargs = distributed.trl_kwargs(hw, rank0_loads=True)
    assert kwargs.get("ddp_backend") == backend
    if strategy == "fsdp":
        # FSDP2, the boolean switch (the string form is deprecated), layers found by accelerate
        # from the model's _no_split_modules (no class named), FSDP's own checkpointing and
        # never the Trainer's (an extra all-gather in backward), no FSDP1-only key; checkpoints
        # sharded per rank, not gathered on rank 0; rank 0 alone reads the checkpoint.
        assert kwargs["fsdp"] is True and kwargs["activation_checkpointing"] is False
        assert kwargs["fsdp_config"] == {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                         "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT",
                                         "activation_checkpointing": checkpointing,
                                         "cpu_ram_efficient_loading": True}
        assert distributed.trl_kwargs(hw)["fsdp_config"]["cpu_ram_efficient_loading"] is False
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
@pytest.mark.parametrize("option", ["cpu_2proc", "gpu_ddp_8", "cpu_2proc_fsdp", "gpu_fsdp_8", "gpu_fsdp_2x8"])
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
        assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"
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


def test_a_rank_builds_its_trl_config_before_any_model(tmp_path, monkeypatch):
    """Creating the TrainingArguments starts the process group and, with ZeRO-3, registers the
    DeepSpeed config that `is_deepspeed_zero3_enabled()` reads in from_pretrained: only then
    does a model load sharded (zero.Init) instead of whole on every rank. So the TRL config,
    then the strategy's own set-up, then the models."""
    from rlhf.models import loading as models
    from rlhf.run import rundir
    from rlhf.job import runner

    run_dir = tmp_path / "run"
    rundir.prepare(run_dir, resolved_config(compose_job([f"cache_dir={tmp_path / 'cache'}"])))
    calls = []
    real_arguments = runner.trl_arguments

    def arguments(*args, **kwargs):
        calls.append("trl_arguments")
        return real_arguments(*args, **kwargs)

    class Loaded(Exception):
        pass

    def load_model(*args, **kwargs):
        calls.append("load_model")
        raise Loaded

    monkeypatch.setattr(runner, "trl_arguments", arguments)
    monkeypatch.setattr(distributed, "prepare_strategy", lambda hw: calls.append("prepare_strategy"))
    monkeypatch.setattr(models, "load_model", load_model)
    with pytest.raises(Loaded):
        runner.train(run_dir)
    assert calls == ["trl_arguments", "prepare_strategy", "load_model"]


class _Zero3Config:
    """What TrainingArguments registers for a ZeRO-3 config (HfTrainerDeepSpeedConfig), as far
    as from_pretrained asks it (building the real one needs deepspeed installed)."""

    def is_zero3(self) -> bool:
        return True


@pytest.fixture
def zero3_registered():
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    args = SimpleNamespace(hf_deepspeed_config=_Zero3Config())
    set_hf_deepspeed_config(args.hf_deepspeed_config)
    yield args
    unset_hf_deepspeed_config()


def test_one_rank_loads_whole_models_after_a_zero3_run(zero3_registered):
    """Under the registered ZeRO-3 config from_pretrained would build the model in zero.Init,
    partitioning it across ranks that have finished; rank 0 loads whole, then it is back."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    assert is_deepspeed_zero3_enabled()
    with distributed.loading_whole_models(zero3_registered):
        assert not is_deepspeed_zero3_enabled()
        model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    assert is_deepspeed_zero3_enabled()
    assert all(p.numel() > 0 for p in model.parameters())


def test_the_final_generation_eval_of_a_zero3_run_loads_its_models_whole(zero3_registered, monkeypatch, tmp_path):
    """judge_final runs on rank 0 after the other ranks left: the saved policy and the
    reference it loads must not enter zero.Init."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from rlhf.job import runner
    from rlhf.judge import stage

    run = validate(compose_job(["hardware=gpu_zero3_8"]))
    seen = []
    monkeypatch.setattr(runner, "free_training_state",
                        lambda trainer, keep=None: seen.append(("training state freed", keep)))
    monkeypatch.setattr(stage, "load_policy", lambda run, path: seen.append(("policy", is_deepspeed_zero3_enabled())))

    def reference(run, policy):
        seen.append(("reference", is_deepspeed_zero3_enabled()))
        return SimpleNamespace(release=lambda: seen.append(("reference released", None)))

    monkeypatch.setattr(stage, "Reference", reference)
    judge = SimpleNamespace(evaluate_policy=lambda policy, reference, out_dir: {"zero3": is_deepspeed_zero3_enabled()})
    assert runner.judge_final(run, judge, SimpleNamespace(args=zero3_registered), tmp_path) == {"zero3": False}
    # Sharded: the training state is freed first (the model too), then the saved policy loads.
    assert seen == [("training state freed", None), ("policy", False), ("reference", False),
                    ("reference released", None)]
    assert is_deepspeed_zero3_enabled()


def test_deepspeed_stays_refused_on_the_cpu_with_the_choices_named():
    from rlhf.core.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        hardware("cpu_2proc", "hardware.distributed=deepspeed_zero3")
    assert "hardware.distributed=deepspeed_zero3 needs GPUs" in str(error.value)
    assert "hardware.distributed=ddp or fsdp" in str(error.value)


# ---------------------------------------------------------------------------- two CPU ranks

STEPS = ("method.max_steps=4", "method.logging_steps=1")


def _losses(run_dir, key="loss") -> list[float]:
    return [h[key] for h in read_history(run_dir) if "loss" in h]


def _metrics(run_dir) -> dict:
    assert (run_dir / "SUCCESS").is_file()
    return json.loads((run_dir / "metrics.json").read_text())


def _weights(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _loaded(model_dir) -> dict:
    """The state dict of the saved model as from_pretrained loads it (tied weights tied)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


RANK1_POLICY = "built empty, its shards broadcast from rank 0"


def _assert_sharded(metrics: dict, checkpointed: int = 0) -> None:
    """The ranks really ran FSDP2, each decoder layer its own unit (the tiny model has 2)."""
    strategy = metrics["distributed"]
    assert strategy["type"] == "FSDP" and strategy["processes"] == 2 and strategy["fsdp_version"] == 2, strategy
    assert strategy["fsdp_units"]["LlamaDecoderLayer"] == 2, strategy
    assert strategy["checkpointed_layers"] == checkpointed, strategy
    # Rank 0 alone read the checkpoint; rank 1 built the model empty and got its shards from rank 0.
    assert [r["policy"] for r in metrics["ranks"]] == ["read the checkpoint", RANK1_POLICY]


def _assert_sharded_checkpoint(checkpoint) -> None:
    """Each rank wrote its own shard of the weights and of the optimizer state
    (SHARDED_STATE_DICT, torch.distributed.checkpoint); nothing was gathered on rank 0."""
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (checkpoint / part).iterdir() if p.suffix == ".distcp") == \
            ["__0_0.distcp", "__1_0.distcp"], part
    gathered = [p.name for p in checkpoint.iterdir() if p.suffix in (".bin", ".safetensors")]
    assert gathered == [], gathered


def _train(tmp_path, name: str, *overrides: str):
    """A run in its own directory with its own data cache (nothing computed by one is reused
    by the other); its run dir."""
    (tmp_path / name).mkdir()
    train(tmp_path / name, *STEPS, *overrides, run_dir=tmp_path / name / "run")
    return tmp_path / name / "run"


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_dpo_on_two_cpu_ranks_matches_one_process_and_saves_the_same_model(tmp_path):
    """The FSDP ranks compute their own reference log-probs (TRL shards a reference copy for
    it). The model saved from the shards (every rank joins the gather) is the model one
    process trains, and rank 0 alone scores its generations after the other rank is done."""
    one = _train(tmp_path, "one", "method.micro_batch_size=16", "hardware.torch_threads=1")
    two = _train(tmp_path, "two", "hardware=cpu_2proc_fsdp", "method.micro_batch_size=8")
    single, sharded = _losses(one), _losses(two)
    assert len(sharded) == 4 and sharded == pytest.approx(single, rel=1e-5, abs=1e-6)
    metrics, reference = _metrics(two), _metrics(one)
    _assert_sharded(metrics)
    _assert_sharded_checkpoint(two / "checkpoints" / "checkpoint-4")
    assert metrics["reference"]["precomputed"] == {"train": "computed", "eval": "computed"}
    assert metrics["eval"]["eval_loss"] == pytest.approx(reference["eval"]["eval_loss"], rel=1e-5)
    a, b = _loaded(one / "model"), _loaded(two / "model")
    assert sorted(a) == sorted(b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    # The gathered state dict holds the tied embedding twice (each a tensor of its own, so
    # save_pretrained, which finds ties by storage, keeps both); they are the same values.
    saved = _weights(two / "model")
    assert saved["lm_head.weight"].equal(saved["model.embed_tokens.weight"])
    assert metrics["generation"]["metrics"]["win_rate"] == pytest.approx(
        reference["generation"]["metrics"]["win_rate"], abs=0.05)


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_grpo_with_its_own_checkpointing_matches_ddp_on_the_same_ranks(tmp_path):
    """GRPO samples its completions with a seed per process (TRL: set_seed(seed,
    device_specific=True)), so one process draws other completions than two; two DDP ranks
    draw the same as two FSDP ranks. Activation checkpointing on: FSDP's own under FSDP, the
    Trainer's under DDP; neither changes the numbers."""
    common = ("method=grpo", "method.micro_batch_size=8", "hardware.activation_checkpointing=true")
    ddp = _train(tmp_path, "ddp", *common, "hardware=cpu_2proc")
    fsdp = _train(tmp_path, "fsdp", *common, "hardware=cpu_2proc_fsdp")
    assert len(_losses(fsdp)) == 4
    assert _losses(fsdp) == pytest.approx(_losses(ddp), rel=1e-4, abs=1e-7)
    assert _losses(fsdp, "kl") == pytest.approx(_losses(ddp, "kl"), rel=1e-4, abs=1e-7)
    assert max(_losses(fsdp, "kl")) > 0  # the policy moved away from its reference
    metrics = _metrics(fsdp)
    _assert_sharded(metrics, checkpointed=2)
    assert metrics["reference"]["kind"] == "trl_reload"
    assert _metrics(ddp)["distributed"] == {"type": "MULTI_CPU", "processes": 2}


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_lora_reward_model_is_merged_from_the_shards_like_one_process(tmp_path):
    """Under FSDP no rank holds whole weights to merge: rank 0 merges the adapter the ranks
    saved together onto the base checkpoint. The result is the model one process merges."""
    common = ("method=reward", "peft=lora")
    one = _train(tmp_path, "one", *common, "method.micro_batch_size=16", "hardware.torch_threads=1")
    two = _train(tmp_path, "two", *common, "hardware=cpu_2proc_fsdp", "method.micro_batch_size=8")
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5, abs=1e-6)
    assert [r["policy"] for r in _metrics(two)["ranks"]] == ["read the checkpoint", RANK1_POLICY]
    assert (two / "model" / "adapter" / "adapter_config.json").is_file()
    a, b = _weights(one / "model"), _weights(two / "model")
    assert sorted(a) == sorted(b) and "score.weight" in a
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    base = _weights(TINY_MODEL)
    assert max((a[k] - base[k]).abs().max().item() for k in base if k in a) > 1e-4  # the merge changed them


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_resumes_from_its_sharded_checkpoint_as_if_never_stopped(tmp_path):
    """A run stopped after its step-2 checkpoint (here: the step-4 one and the results removed)
    resumes from the shards each rank wrote, and ends where the uninterrupted run ended."""
    import shutil

    steps = ("hardware=cpu_2proc_fsdp", "method.micro_batch_size=8", "method.save_steps=2",
             "method.save_total_limit=2")
    run = _train(tmp_path, "run", *steps)
    ended = _losses(run)
    final = _loaded(run / "model")
    _assert_sharded_checkpoint(run / "checkpoints" / "checkpoint-2")
    for done in ("checkpoints/checkpoint-4", "model"):
        shutil.rmtree(run / done)
    for done in ("SUCCESS", "metrics.json"):
        (run / done).unlink()
    train(tmp_path / "run", *STEPS, *steps, run_dir=run)
    resumed = [h for h in read_history(run) if "loss" in h]
    # Resumed: the history of steps 1-4 is kept (a fresh start deletes it) and 3-4 follow it.
    assert [h["step"] for h in resumed] == [1, 2, 3, 4, 3, 4]
    assert [h["loss"] for h in resumed][-2:] == pytest.approx(ended[-2:], rel=1e-5, abs=1e-6)
    again = _loaded(run / "model")
    assert max((final[k] - again[k]).abs().max().item() for k in final) < 1e-6
