"""One registry per concept: a method is one module in rlhf/methods/ plus its YAML, and the
rest of the platform asks its spec, never its name."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import REPO, read_history, run_cli, train

NAME = "zz_throwaway_cpo"  # sorts last; a name no one ships

# Plain CPO (TRL's CPOTrainer with its sigmoid loss): a reference-free trainer of preference
# pairs that the platform does not ship, registered the way every method is.
MODULE = '''"""A throwaway method written by tests/test_registry.py (deleted when the test ends)."""

from dataclasses import dataclass

from rlhf.config.fields import knob
from rlhf.methods.base import PAIRS, MethodConfig, MethodSpec, register


@dataclass
class ThrowawayMethod(MethodConfig):
    kind: str = "{name}"
    beta: float = knob(0.1, "CPO temperature", gt=0)


register(MethodSpec(
    kind="{name}",
    schema=ThrowawayMethod,
    shape=PAIRS,
    trl_config="trl.experimental.cpo:CPOConfig",
    trl_trainer="trl.experimental.cpo:CPOTrainer",
    trl_fields={{"beta": "beta"}},
    metric="eval_rewards/accuracies",
    greater_is_better=True,
    reference_arg=None,
    fixed_trl={{"loss_type": "sigmoid", "remove_unused_columns": False}},
))
'''.format(name=NAME)

YAML = f"""defaults:
  - base_{NAME}
  - _self_

learning_rate: 1.0e-03
micro_batch_size: 8
gradient_accumulation_steps: 1
max_length: 256
"""


def changed_files() -> set[str]:
    """What git sees changed or added in the working tree (outside git's ignore list)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in out.splitlines()}


@pytest.fixture
def throwaway_method():
    """The two files a new method needs, and nothing else; removed afterwards. Yields the
    files that changed in the repository while they were in place."""
    module = REPO / "rlhf" / "methods" / f"{NAME}.py"
    option = REPO / "conf" / "method" / f"{NAME}.yaml"
    before = changed_files()
    module.write_text(MODULE)
    option.write_text(YAML)
    try:
        yield lambda: changed_files() - before
    finally:
        module.unlink(missing_ok=True)
        option.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_new_method_is_one_module_and_one_yaml(throwaway_method, tmp_path):
    # Its embedded data (pairs, by its row shape), its dataset types and its help, unasked.
    shown = run_cli("rlhf.train", f"method={NAME}", "--cfg", "job", "--resolve", cwd=tmp_path).stdout
    assert "topics_pairs.train.jsonl" in shown and "chatml.intel" in shown
    preview = run_cli("rlhf.preview", f"method={NAME}", "--rows", "1", "--jsonl", cwd=tmp_path).stdout
    assert json.loads(preview.splitlines()[0])["chosen"].endswith("<|im_end|>")

    run_dir = tmp_path / "run"
    train(tmp_path, f"method={NAME}", "method.max_steps=2", "method.logging_steps=1", run_dir=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "SUCCESS").is_file()
    assert metrics["method"] == NAME and metrics["global_step"] == 2
    assert "eval_rewards/accuracies" in metrics["eval"]
    losses = [h["loss"] for h in read_history(run_dir) if "loss" in h]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    # Nothing but the method's own two files was needed (or written) in the repository.
    assert throwaway_method() == {f"rlhf/methods/{NAME}.py", f"conf/method/{NAME}.yaml"}


def test_presets_answer_to_their_method_and_unknown_names_list_the_known():
    from rlhf.core.errors import ConfigError
    from rlhf.methods import lookup, method_names

    assert lookup("ipo").kind == "dpo" and lookup("dapo").kind == "grpo"
    with pytest.raises(ConfigError) as error:
        lookup("dpoo")
    assert "did you mean 'dpo'" in str(error.value) and "ipo" in str(error.value)
    assert {"dpo", "ipo", "kto", "orpo", "simpo", "grpo", "bnpo", "dr_grpo", "dapo", "reward"} <= set(method_names())


def test_every_method_option_is_a_registered_name_and_every_name_has_an_option():
    from rlhf.methods import method_names

    options = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    assert options == set(method_names())


def test_the_default_dataset_follows_the_method_spec():
    """dataset=embedded resolves to the data the method's spec names, per job of a sweep."""
    from rlhf.launch.compose import compose_job
    from rlhf.config.validate import validate
    from rlhf.methods import lookup

    for name in ("dpo", "ipo", "kto", "orpo", "simpo", "grpo", "dapo", "reward"):
        run = validate(compose_job([f"method={name}"]))
        data = lookup(name).embedded_data
        assert run.dataset.path.endswith(data.train) and run.dataset.type == data.type
        assert [s.path for s in run.dataset.eval] == ([str(REPO / "rlhf" / "assets" / data.eval)]
                                                      if data.eval else [])


def test_the_model_head_follows_the_method_spec():
    """The head the checkpoint is loaded with decides the LoRA task type and whether the
    generation eval stage applies (the embedded data's scorers are set for both runs)."""
    from rlhf.launch.compose import compose_job
    from rlhf.config.validate import validate
    from rlhf.judge.checks import enabled
    from rlhf.job.runner import peft_config

    policy, reward = (validate(compose_job([f"method={m}", "peft=lora"])) for m in ("dpo", "reward"))
    assert (policy.spec.model_head, policy.spec.generates) == ("causal_lm", True)
    assert (reward.spec.model_head, reward.spec.generates) == ("sequence_classification", False)
    assert reward.evaluate.reward_funcs == policy.evaluate.reward_funcs != []
    assert enabled(policy) and not enabled(reward)
    assert str(peft_config(policy).task_type) == "CAUSAL_LM" and str(peft_config(reward).task_type) == "SEQ_CLS"
