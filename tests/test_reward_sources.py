"""A reward model wherever a reward function goes: an entry of `method.reward_funcs` (GRPO,
RLOO, Online DPO) or `evaluate.reward_funcs` is a `module.function`, a reward model directory,
a hub id or the run dir of a finished `method=reward` job, told apart before any model loads,
each bad entry refused with one message, and the form each entry took logged."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import TINY_MODEL, fake_run_dir, read_history, run_cli, train


def resolve(entry, models_only=False):
    from rlhf.rewards import sources as reward_sources

    return reward_sources.resolve(str(entry), "method.reward_funcs[0]", models_only=models_only)


def test_each_form_is_told_apart_without_loading_a_model(tiny_reward_model, reward_run_dir):
    import sys

    from rlhf.rewards import sources as reward_sources

    loaded_before = "transformers" in sys.modules
    function = resolve("rlhf.rewards.topic_reward")
    assert (function.form, function.target) == (reward_sources.FUNCTION, "rlhf.rewards.topic_reward")
    model_dir = resolve(tiny_reward_model)
    assert (model_dir.form, model_dir.target) == (reward_sources.MODEL_DIR, str(tiny_reward_model))
    run = resolve(reward_run_dir)
    assert (run.form, run.target) == (reward_sources.RUN_DIR, str(reward_run_dir / "model"))
    hub = resolve("OpenAssistant/reward-model-deberta-v3-large-v2")
    assert (hub.form, hub.target) == (reward_sources.HUB_ID, "OpenAssistant/reward-model-deberta-v3-large-v2")
    # Telling them apart imports no model code (a hub id is only fetched when the job starts).
    assert loaded_before or "transformers" not in sys.modules
    assert "finished run" in run.describe() and "hub" in hub.describe()


def test_a_reward_model_scores_with_its_own_tokenizer(reward_run_dir):
    from rlhf.rewards import sources as reward_sources

    sources = reward_sources.resolve_all(["rlhf.rewards.topic_reward", str(reward_run_dir)], "method.reward_funcs")
    rewards, tokenizers = reward_sources.load(sources, "method.reward_funcs")
    assert tokenizers[0] is None and callable(rewards[0])
    # A reward run comes back as a function that scores the text its pair rows had.
    run = rewards[1]
    assert isinstance(run, reward_sources.RewardRun) and tokenizers[1] is None
    model, tokenizer = run.model, run.tokenizer
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1
    assert tokenizer.name_or_path == str(reward_run_dir / "model")  # its own, not the policy's
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    prompt = [{"role": "user", "content": "Name a tool."}]
    ids = tokenizer("rake", add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    (text,) = run.texts([prompt], [[{"role": "assistant", "content": "rake"}]], [ids])
    # As a pair row: the prompt with the assistant's turn opened, the answer, its end of turn, nothing after.
    assert text == "<|im_start|>user\nName a tool.<|im_end|>\n<|im_start|>assistant\nrake<|im_end|>"
    scores = run(prompts=[prompt], completions=[[{"role": "assistant", "content": "rake"}]], completion_ids=[ids])
    with torch.no_grad():
        direct = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
    assert scores == [pytest.approx(float(direct), abs=1e-5)]


def _broken_entries(tmp_path, tiny_reward_model):
    """Each bad entry next to the text its one message must contain."""
    unfinished = fake_run_dir(tmp_path, tiny_reward_model, "reward", finished=False)
    policy_run = fake_run_dir(tmp_path, TINY_MODEL, "dpo")
    causal_in_reward_run = fake_run_dir(tmp_path / "causal", TINY_MODEL, "reward")
    no_tokenizer = tmp_path / "rm_without_tokenizer"
    shutil.copytree(tiny_reward_model, no_tokenizer,
                    ignore=shutil.ignore_patterns("tokenizer*", "chat_template*", "special_tokens*"))
    forms = "module.function (e.g. rlhf.rewards.topic_reward); a reward model directory"
    return {
        "justaname": ["'justaname' is neither a reward function nor a reward model", "must be written module.function",
                      forms, "the run dir of a finished method=reward job"],
        "nowhere.fn": ["reward function 'nowhere.fn': no module 'nowhere'", "nor is 'nowhere.fn' a directory", forms],
        str(tmp_path / "absent"): ["no such directory", forms],
        str(unfinished): ["is a run dir that has not finished (no SUCCESS file", "name a finished run dir"],
        str(policy_run): ["is the run dir of a method=dpo job", "is a policy, not a reward model"],
        str(causal_in_reward_run): ["holds a LlamaForCausalLM, not a sequence classifier"],
        str(TINY_MODEL): ["holds a LlamaForCausalLM, not a sequence classifier"],
        str(no_tokenizer): ["the reward model's tokenizer cannot be loaded", "has no tokenizer files"],
    }


def test_every_bad_entry_is_one_message_naming_it(tmp_path, tiny_reward_model):
    from rlhf.core.errors import RlhfError

    for entry, expected in _broken_entries(tmp_path, tiny_reward_model).items():
        with pytest.raises(RlhfError) as error:
            resolve(entry)
        message = str(error.value)
        assert message.startswith("method.reward_funcs[0]") and entry in message, message
        for text in expected:
            assert text in message, (entry, text, message)


@pytest.mark.parametrize("method", ["grpo", "rloo", "online_dpo"])
def test_the_command_line_refuses_bad_entries_before_anything_loads(tmp_path, tiny_reward_model, method):
    entries = _broken_entries(tmp_path, tiny_reward_model)
    proc = run_cli("rlhf.train", f"method={method}", f"method.reward_funcs=[{','.join(entries)}]",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for index, (entry, expected) in enumerate(entries.items()):  # every entry's own problem, at once
        assert f"method.reward_funcs[{index}]" in proc.stderr
        for text in expected:
            assert text in proc.stderr, (text, proc.stderr[-3000:])
    assert not (tmp_path / "run").exists()


def test_a_tokenizer_that_does_not_load_is_named_when_the_job_starts(tmp_path, tiny_reward_model):
    broken = tmp_path / "rm_broken_tokenizer"
    shutil.copytree(tiny_reward_model, broken)
    (broken / "tokenizer.json").write_text("not json")
    proc = train(tmp_path, "method=grpo", f"method.reward_funcs=[{broken}]", "evaluate.enabled=false",
                 run_dir=tmp_path / "run", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (f"method.reward_funcs[0]='{broken}': the reward model's tokenizer cannot be loaded from {broken}"
            in proc.stderr), proc.stderr[-3000:]
    assert "Loading weights" not in proc.stderr  # neither the reward model nor the policy was loaded
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the trainer was built


def test_a_hub_reward_model_that_cannot_be_fetched_is_named_when_the_job_starts(tmp_path):
    proc = train(tmp_path, "method=rloo", "method.reward_funcs=[rlhf.rewards.topic_reward,someorg/absent-rm]",
                 "evaluate.enabled=false", run_dir=tmp_path / "run", check=False)  # offline: HF_HUB_OFFLINE=1
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "method.reward_funcs[1] = someorg/absent-rm: reward model someorg/absent-rm from the hub" in out
    assert "cannot load the tokenizer of the reward model method.reward_funcs[1] 'someorg/absent-rm'" in out
    assert "Give method.reward_funcs[1] a local reward model directory or a finished reward run dir" in out


def test_evaluate_reward_models_takes_models_only(reward_run_dir):
    from rlhf.core.errors import RlhfError

    assert resolve(reward_run_dir, models_only=True).target == str(reward_run_dir / "model")
    with pytest.raises(RlhfError, match="is not a reward model: give a reward model directory"):
        resolve("rlhf.rewards.topic_reward", models_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "rloo", "online_dpo"])
def test_a_finished_reward_run_trains_an_online_method(tmp_path, reward_run_dir, method):
    """Its run dir as the second reward: a few steps train, the log says which form each entry
    took, and TRL logged the reward model's scores beside the function's."""
    run_dir = tmp_path / "run"
    proc = train(tmp_path, f"method={method}", f"method.reward_funcs=[rlhf.rewards.topic_reward,{reward_run_dir}]",
                 "method.max_steps=2", "method.logging_steps=1", "evaluate.enabled=false", run_dir=run_dir)
    assert (run_dir / "SUCCESS").is_file()
    logged = proc.stdout + proc.stderr  # Hydra's job log goes to stdout
    assert "method.reward_funcs[0] = rlhf.rewards.topic_reward: reward function rlhf.rewards.topic_reward" in logged
    assert (f"method.reward_funcs[1] = {reward_run_dir}: reward model of the finished run {reward_run_dir} "
            f"({reward_run_dir / 'model'})") in logged
    history = [h for h in read_history(run_dir) if "loss" in h]
    assert len(history) == 2
    if method != "online_dpo":  # GRPO and RLOO log each reward's mean under its name
        # (a reward run is passed as a function scoring its rows' text: rlhf.rewards.sources.RewardRun)
        # at every step that sampled (the tiny GRPO's second step reuses the first's completions)
        sampled = [h for h in history if "reward" in h]
        assert sampled and all("rewards/topic_reward/mean" in h and "rewards/reward_run/mean" in h
                               for h in sampled), history[0]


def test_the_generation_eval_scores_with_a_reward_run_given_as_a_reward_func(tmp_path, reward_run_dir):
    out = tmp_path / "eval"
    proc = run_cli("rlhf.evaluate", str(TINY_MODEL), f"evaluate.reward_funcs=[rlhf.rewards.topic_reward,"
                   f"{reward_run_dir}]", "evaluate.num_prompts=4", "evaluate.max_new_tokens=4", "hardware.torch_threads=1",
                   "--out", str(out), cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())["generation"]["metrics"]
    assert "topic_reward" in metrics and f"rm_{reward_run_dir.name}" in metrics, metrics
    logged = proc.stdout + proc.stderr
    assert f"evaluate.reward_funcs[1] = {reward_run_dir}: reward model of the finished run" in logged
