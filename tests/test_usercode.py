"""GRPO with user code: the seed's example as written, and bad reward functions or transforms
refused before any model loads, naming the string, where it was looked for and why."""

from __future__ import annotations

import json
import re
import textwrap

import datasets
import pytest

from conftest import run_cli, train


def test_the_seeds_grpo_example_runs_as_written(tmp_path):
    run_dir = tmp_path / "gsm8k"
    train(tmp_path, "+experiment=grpo_gsm8k", run_dir=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "grpo" and metrics["global_step"] == 4
    rows = datasets.load_from_disk(metrics["data"]["path"] + "/train")
    # oai_gsm8k_transform: the question became a chat prompt, the answer its final number.
    assert "question" not in rows.column_names
    first = rows[0]
    assert first["prompt"][0]["role"] == "user" and first["answer"].isdigit()
    assert (run_dir / "SUCCESS").is_file()


@pytest.fixture
def rewards_dir(tmp_path):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent('''
        def good(completions, **kwargs):
            return [0.0 for _ in completions]

        def no_kwargs(prompts, completions):
            return [0.0 for _ in completions]

        def no_completions(prompts, **kwargs):
            return []
    '''))
    return tmp_path


@pytest.mark.parametrize("name,expected", [
    ("nowhere.fn", ["reward function 'nowhere.fn': no module 'nowhere' (nowhere.py) in"]),
    ("my_rewards.missing", ["reward function 'my_rewards.missing'", "has no 'missing'", "it defines: good"]),
    ("my_rewards.no_kwargs", ["wrong signature (prompts, completions)", "takes no **kwargs"]),
    ("my_rewards.no_completions", ["has no 'completions' parameter"]),
    ("justaname", ["must be written module.function"]),
])
def test_bad_reward_functions_are_refused_before_anything_loads(rewards_dir, name, expected):
    proc = run_cli("rlhf.train", "method=grpo", f"method.reward_funcs=[{name}]",
                   f"hydra.run.dir={rewards_dir / 'run'}", cwd=rewards_dir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert not (rewards_dir / "run").exists()


def test_a_bad_transform_is_refused_before_anything_loads(rewards_dir):
    proc = run_cli("rlhf.train", "method=grpo", "dataset.type=my_rewards.absent",
                   f"hydra.run.dir={rewards_dir / 'run'}", cwd=rewards_dir, check=False)
    assert proc.returncode == 2 and "dataset transform 'my_rewards.absent'" in proc.stderr
    assert "has no 'absent'" in proc.stderr


def test_a_reward_module_in_the_working_directory_is_found(rewards_dir):
    run_dir = rewards_dir / "run"
    train(rewards_dir, "method=grpo", "method.reward_funcs=[my_rewards.good]", "method.max_steps=2",
          run_dir=run_dir)
    assert (run_dir / "SUCCESS").is_file()


def test_a_reward_needing_a_column_the_data_lacks_is_named_before_training(tmp_path):
    proc = train(tmp_path, "method=grpo", "dataset=gsm8k_sample", run_dir=tmp_path / "run", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ("reward function 'rlhf.rewards.topic_reward' needs the column(s) category, and the training data "
            "has only: answer, prompt") in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the trainer was built


@pytest.mark.parametrize("returned,expected", [(None, "returned None"), ([1.0], "returned [1.0]"),
                                               (["good", "bad"], "returned ['good', 'bad']")])
def test_a_reward_result_that_is_not_one_number_per_completion_names_the_function(tmp_path, returned, expected):
    from rlhf.core.errors import UserCodeError
    from rlhf.core.usercode import load_reward_functions

    module = f"badreward_{abs(hash(repr(returned)))}"  # a module name of its own per case (imports are cached)
    (tmp_path / f"{module}.py").write_text(f"def r(completions, **kwargs):\n    return {returned!r}\n")
    (reward,) = load_reward_functions([f"{module}.r"], [str(tmp_path)])
    assert reward.__name__ == "r"  # TRL logs rewards under the function's own name
    with pytest.raises(UserCodeError, match=f"reward function '{module}.r' {re.escape(expected)}: it must return "
                                            "a list with one number \\(or None\\) per completion \\(2 here\\)"):
        reward(prompts=["p", "q"], completions=["a", "b"])
    (tmp_path / "goodreward.py").write_text("def r(completions, **kwargs):\n    return [1.0, None]\n")
    (good,) = load_reward_functions(["goodreward.r"], [str(tmp_path)])
    assert good(prompts=["p", "q"], completions=["a", "b"]) == [1.0, None]
