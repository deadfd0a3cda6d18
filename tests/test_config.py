"""Composing and validating configs: every shipped option, the fast path, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import ConfigError
from rlhf.methods import METHODS

CONF = REPO / "conf"
GROUPS = ("method", "dataset", "model", "hardware", "peft", "logger", "experiment")


def options(group: str) -> list[str]:
    """Every option shipped in a group (nested ones as dir/name)."""
    root = CONF / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def method_options() -> list[str]:
    return options("method")


def compose_valid(*overrides: str):
    return validate(compose_job(list(overrides)))


# Options that need software this machine lacks: they compose, and validation refuses them
# here with this message (with bitsandbytes installed they validate; whether the machine has
# the GPU they need is the launching process's check, tests/test_preflight.py).
NEEDS_GPU = {("peft", "qlora"): ["bitsandbytes", "is not installed"]}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_shipped_option_composes_and_validates(group, option):
    """Each option validates with the default choices, or (for data of one method's shape)
    with at least one shipped method."""
    if (group, option) in NEEDS_GPU:
        cfg = compose_job([f"{group}={option}", "hardware=gpu"])
        with pytest.raises(ConfigError) as error:
            validate(cfg)
        for text in NEEDS_GPU[(group, option)]:
            assert text in str(error.value)
        return
    if group in ("method", "dataset"):
        attempts = [[f"{group}={option}"]] + [[f"{group}={option}", f"method={m}"] for m in method_options()]
    elif group == "experiment":
        attempts = [[f"+experiment={option}"]]
    else:
        attempts = [[f"{group}={option}"]]
    errors = []
    for overrides in attempts:
        try:
            spec = compose_valid(*overrides)
        except ConfigError as error:
            errors.append(str(error))
            continue
        assert spec is not None
        return
    pytest.fail(f"{group}={option} validates with no shipped method:\n" + "\n".join(errors))


@pytest.mark.parametrize("tuning", options("tuning"))
def test_every_tuning_overlay_applies_to_its_model_and_method(tuning):
    model, method = tuning.split("_", 1)
    cfg = compose_job([f"model={model}", f"method={method}"])
    spec = validate(cfg)
    overlay = (CONF / "tuning" / f"{tuning}.yaml").read_text()
    learning_rate = re.search(r"learning_rate:\s*(\S+)", overlay)
    if learning_rate:  # the overlay's value is the one the run gets
        assert spec.method.learning_rate == float(learning_rate.group(1))


def test_every_registered_method_has_a_shipped_option():
    kinds = {compose_valid(f"method={m}").method.kind for m in method_options()}
    assert kinds == set(METHODS)


def test_default_is_dpo_on_tiny_model_and_embedded_data_on_cpu():
    spec = compose_valid()
    assert spec.method.kind == "dpo"
    assert Path(spec.model.name_or_path).name == "tiny-chatml" and Path(spec.model.name_or_path).is_dir()
    assert spec.dataset.type == "chatml.intel" and Path(spec.dataset.path).is_file()
    assert spec.hardware.accelerator == "cpu"


def test_hub_models_keep_their_hub_ids():
    spec = compose_valid("model=qwen2.5-0.5b-instruct")
    assert spec.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    # model.dtype=auto: fp32 weights where all train (AdamW on bf16 weights loses most updates at
    # 5e-7), the checkpoint's own (bf16) where frozen (rlhf.models.loading.weights_dtype).
    assert spec.model.dtype == "auto"
    # The tiny model's tuned hyperparameters do not follow a switch to another model.
    assert spec.method.learning_rate == 5e-7


def test_model_options_take_dtype_attention_and_chat_template_overrides():
    spec = compose_valid("model=llama-3.1-8b-instruct", "model.dtype=float16",
                         "model.attn_implementation=eager", "model.chat_template=llama3")
    assert (spec.model.dtype, spec.model.attn_implementation, spec.model.chat_template) == (
        "float16", "eager", "llama3")


def test_loss_type_takes_a_name_or_a_list_with_weights():
    spec = compose_valid("method.loss_type=[sigmoid,sft]", "method.loss_weights=[1.0,0.5]")
    kwargs = spec.spec.trl_kwargs(spec.method, has_eval=True)
    assert kwargs["loss_type"] == ["sigmoid", "sft"] and kwargs["loss_weights"] == [1.0, 0.5]
    assert compose_valid("method.loss_type=hinge").spec.trl_kwargs(
        compose_valid("method.loss_type=hinge").method, has_eval=False)["loss_type"] == ["hinge"]


def test_every_dpo_loss_validates():
    from rlhf.methods.dpo import DPO_LOSSES

    for loss in DPO_LOSSES:
        extra = ["method.label_smoothing=0.001"] if loss == "exo_pair" else []
        assert compose_valid(f"method.loss_type={loss}", *extra).method.loss_type == loss


def test_training_knobs_map_to_trl_fields():
    spec = compose_valid("method.learning_rate=3e-4", "method.num_epochs=2", "method.micro_batch_size=4",
                         "method.eval_batch_size=5", "method.gradient_accumulation_steps=3",
                         "method.max_length=128", "method.eval_steps=7", "method.save_steps=9",
                         "method.logging_steps=2", "method.max_steps=11", "method.beta=0.3")
    kwargs = spec.spec.trl_kwargs(spec.method, has_eval=True)
    expected = {
        "learning_rate": 3e-4, "num_train_epochs": 2, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 5, "gradient_accumulation_steps": 3, "max_length": 128,
        "eval_strategy": "steps", "eval_steps": 7, "save_strategy": "steps", "save_steps": 9,
        "logging_steps": 2, "max_steps": 11, "beta": 0.3,
    }
    assert {k: kwargs[k] for k in expected} == expected


@pytest.mark.parametrize("method", method_options())
def test_a_run_that_chooses_no_optimizer_gets_the_one_plain_trl_gets(method):
    """A plain TRL script trains with transformers' default optimizer (fused AdamW); a run that
    does not choose one must too, or each of its steps costs more than TRL's."""
    from transformers import TrainingArguments

    spec = compose_valid(f"method={method}")
    trl_default = TrainingArguments.__dataclass_fields__["optim"].default
    assert spec.spec.trl_kwargs(spec.method, has_eval=False)["optim"] == trl_default


# ------------------------------------------------------------------ the command line


def test_print_config_and_help_import_neither_torch_nor_trl(tmp_path):
    # A GPU config with QLoRA too: its checks (driver, bitsandbytes) must not initialise CUDA
    # before the job restricts CUDA_VISIBLE_DEVICES (rlhf.cluster.devices), so torch stays unimported.
    for args in (["--cfg", "job"], ["--help"], ["method.beta=-1"], ["hardware=gpu", "peft=qlora"]):
        proc = _importtime(tmp_path, args)
        imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "torch" not in imported and "trl" not in imported and "transformers" not in imported, args


def _importtime(cwd: Path, args: list[str]):
    import subprocess
    import sys

    from conftest import cli_env

    return subprocess.run([sys.executable, "-X", "importtime", "-m", "rlhf.train", *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=60)


def test_cfg_job_prints_the_composed_config(tmp_path):
    proc = run_cli("rlhf.train", "--cfg", "job", "method.beta=0.25", cwd=tmp_path)
    assert "beta: 0.25" in proc.stdout and "kind: dpo" in proc.stdout


def test_help_lists_the_groups_and_their_options(tmp_path):
    proc = run_cli("rlhf.train", "--help", cwd=tmp_path)
    for group in GROUPS:
        assert f"{group}:" in proc.stdout
    assert "qwen2.5-0.5b-instruct" in proc.stdout and "ipo" in proc.stdout


BAD_INPUTS = [
    (["method=dpoo"], ["method=dpoo is not an option", "did you mean 'dpo'",
                       "dpo, dr_grpo, grpo, ipo, kto, online_dpo, orpo, reward, rloo, simpo"]),
    (["model=qwen"], ["model=qwen is not an option", "qwen2.5-0.5b-instruct", "tiny"]),
    (["method.betta=0.1"], ["unknown key 'method.betta'", "did you mean 'method.beta'"]),
    (["method.beta=abc"], ["method.beta=abc is not a number (float)"]),
    (["method.micro_batch_size=1.5"], ["method.micro_batch_size=1.5 is not a whole number (int)"]),
    (["dataset.drop_empty=maybe"], ["dataset.drop_empty=maybe is not true or false (bool)"]),
    (["beta=0.2"], ["unknown key 'beta'; did you mean 'method.beta'?", "method.beta=0.2"]),
    (["+beta=0.2"], ["unknown top-level key 'beta'; did you mean 'method.beta'?", "method.beta=0.2"]),
    (["method=grpo", "method.reward_funcs=rewards.fn"],
     ["method.reward_funcs=rewards.fn is not a list", "'method.reward_funcs=[rewards.fn]'"]),
    (["hardware.train_gpus=3"], ["hardware.train_gpus=3 is not a list", "'hardware.train_gpus=[3]'"]),
    (["dataset.extra=[{path: a.jsonl, drop_empty: maybe}]"],
     ["in an entry of dataset.extra: drop_empty=maybe is not true or false (bool)"]),
    (["dataset.extra=more.jsonl"], ["dataset.extra=more.jsonl is not a list", "'dataset.extra=[{path: more.jsonl}]'"]),
    (["method.beta=-1"], ["method.beta=-1.0 is out of range", "must be > 0"]),
    (["method.loss_type=sigmoidd"], ["'sigmoidd' is not a DPO loss TRL has", "did you mean 'sigmoid'",
                                      "hinge, ipo, exo_pair"]),
    (["method.loss_type=[sigmoid,sft]", "method.loss_weights=[1.0]"], ["1 weights for 2 losses"]),
    (["hardware.precision=fp8"], ["hardware.precision='fp8' is not one of: fp32, bf16, fp16"]),
    (["method.beta=["], ["cannot read the override 'method.beta=['", "quote values"]),
    (["method.beta 0.2"], ["cannot read the override 'method.beta 0.2'", "no '=' between the key and its value"]),
    (["dataset.extra=[{path: a.jsonl, typ: chatml.intel}]"], ["unknown key 'typ' in an entry of dataset.extra",
                                                               "did you mean 'type'"]),
    (["dataset.path=mine.jsonl", "dataset.type=chatml.intel", "dataset.eval=[]"],
     ["dataset.path: no such file or directory: mine.jsonl"]),
    (["dataset=sample_intel", "dataset.val_set_size=1.5"], ["val_set_size=1.5 is neither a fraction"]),
    (["method.optimizer=paged_adamw_8bit"], ["runs on bitsandbytes, which is not installed"]),
    (["model.name_or_path=./no-model"], ["model.name_or_path=./no-model: no such directory"]),
    (["method=rloo", "peft=lora", "peft.rl_adapter_ref_model=true"],
     ["peft.rl_adapter_ref_model=true: rloo's trainer builds its reference itself", "adapter disabled"]),
    (["dataset.path=mine.jsonl", "dataset.type=chatml.intel"],
     ["dataset.path=mine.jsonl is your data, but dataset.eval still holds the embedded default's eval set",
      "'dataset.eval=[]' dataset.val_set_size=0.05"]),
    (["method=reward", "evaluate.enabled=true"],
     ["evaluate: method reward trains a reward model", "the generation eval stage does not apply to it",
      "evaluate.reward_models=[<reward run dir>]"]),
    (["method=reward", "method.center_rewards_coefficient=-0.1"],
     ["method.center_rewards_coefficient=-0.1 is out of range"]),
    (["method=reward", "dataset.unpair=true"], ["dataset.unpair=true turns preference pairs into unpaired rows, "
                                                "but reward does not train on unpaired rows"]),
]


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS, ids=[" ".join(b[0]) for b in BAD_INPUTS])
def test_bad_input_is_one_clear_message_before_anything_runs(tmp_path, overrides, expected):
    proc = run_cli("rlhf.train", f"hydra.run.dir={tmp_path / 'run'}", *overrides, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert proc.stderr.count("error:") == 1, proc.stderr  # one message, printed once
    for raw in ("could not be converted", "ListConfig", "not a valid bool", "in an entry of beta"):
        assert raw not in proc.stderr, proc.stderr  # OmegaConf's own words do not reach the user
    assert not (tmp_path / "run").exists(), "a bad config must not create a run dir"


def test_a_bad_point_in_a_sweep_stops_the_sweep_before_any_job(tmp_path):
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "method.beta=0.1,-2",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "method.beta=-2" in proc.stderr and "must be > 0" in proc.stderr
    assert not (tmp_path / "sweep").exists()
