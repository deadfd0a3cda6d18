"""Every method learns on a task whose answer is known, from `python -m rlhf.train method=<m>`
with no other override (its embedded data and tiny-model tuning are chosen for it)."""

from __future__ import annotations

import json

import pytest

from conftest import read_history, train

pytestmark = pytest.mark.slow


def run_method(tmp_path, method: str, *overrides: str) -> dict:
    run_dir = tmp_path / method
    train(tmp_path, f"method={method}", *overrides, run_dir=run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "SUCCESS").is_file()
    return metrics


@pytest.mark.parametrize("method", ["ipo", "simpo", "orpo"])
def test_pair_methods_reach_held_out_preference_accuracy(tmp_path, method):
    metrics = run_method(tmp_path, method)
    assert metrics["metric"] == "eval_rewards/accuracies"
    assert metrics["metric_value"] >= 0.85, metrics["eval"]


def test_kto_held_out_reward_margin_grows_positive(tmp_path):
    metrics = run_method(tmp_path, "kto")
    margins = [h["eval_rewards/margins"] for h in read_history(tmp_path / "kto") if "eval_rewards/margins" in h]
    assert metrics["metric"] == "eval_rewards/margins"
    assert margins[-1] > 0.1 and margins[-1] > margins[0] + 0.1, margins


@pytest.mark.parametrize("method", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_reward_rises_on_the_topics_task(tmp_path, method):
    metrics = run_method(tmp_path, method)
    learning = metrics["learning"]
    assert metrics["metric"] == "reward_last_tenth"
    # The reward is the share of answer words naming a thing of the asked category: about
    # 0.04 for the random model; GRPO must at least double it.
    assert learning["reward_last_tenth"] > 2 * learning["reward_first_tenth"] + 0.03, learning


def test_rloo_reward_rises_on_the_topics_task(tmp_path):
    metrics = run_method(tmp_path, "rloo")
    learning = metrics["learning"]
    assert metrics["metric"] == "reward_last_tenth"
    # As GRPO's: the random model scores about 0.04; RLOO (with its KL penalty towards the
    # reference TRL builds, beta 0.01) must at least double it.
    assert metrics["reference"]["kind"] == "trl_reload"
    assert learning["reward_last_tenth"] > 2 * learning["reward_first_tenth"] + 0.03, learning


def test_online_dpo_reward_rises_and_its_pairs_are_learned(tmp_path):
    """Online DPO's reward is the mean score of the two completions it samples per prompt
    (TRL logs it as objective/scores): it must at least double, as GRPO's does. Its DPO pairs
    are learned too: by the end the policy ranks its chosen completion above the rejected one,
    relative to the reference (rewards/accuracies), more often than at the start and than a
    coin would."""
    metrics = run_method(tmp_path, "online_dpo")
    learning = metrics["learning"]
    assert metrics["metric"] == "reward_last_tenth" and metrics["reference"]["kind"] == "separate_copy"
    assert learning["reward_last_tenth"] > 2 * learning["reward_first_tenth"] + 0.03, learning
    accuracies = [h["rewards/accuracies"] for h in read_history(tmp_path / "online_dpo") if "rewards/accuracies" in h]
    tenth = len(accuracies) // 10
    first, last = sum(accuracies[:tenth]) / tenth, sum(accuracies[-tenth:]) / tenth
    assert last > 0.55 and last > first + 0.05, (first, last)
    # The generation eval stage (60 held-out prompts) agrees: the trained policy beats the
    # untrained one on the topic reward.
    generation = metrics["generation"]["metrics"]
    assert generation["topic_reward"] > generation["reference/topic_reward"] + 0.05, generation


def _held_out_scores(run_dir, model_dir) -> list[tuple[float, float]]:
    """(chosen, rejected) scores of every held-out pair by the saved model, loaded as any reward
    model is: AutoModelForSequenceClassification on `model_dir`, each pair's prompt + answer."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    metrics = json.loads((run_dir / "metrics.json").read_text())
    pairs = datasets.load_from_disk(metrics["data"]["path"] + "/eval")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id

    def score(texts: list[str]) -> list[float]:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            return model(**batch).logits[:, 0].tolist()

    chosen = score([p + c for p, c in zip(pairs["prompt"], pairs["chosen"])])
    rejected = score([p + r for p, r in zip(pairs["prompt"], pairs["rejected"])])
    return list(zip(chosen, rejected))


def test_reward_model_ranks_held_out_pairs_and_loads_as_a_sequence_classifier(tmp_path):
    metrics = run_method(tmp_path, "reward")
    run_dir = tmp_path / "reward"
    assert metrics["metric"] == "eval_accuracy" and metrics["metric_value"] >= 0.9, metrics["eval"]
    assert metrics["eval"]["eval_margin"] > 0 and metrics["reference"]["kind"] == "none"
    # A reward model does not generate: the generation eval stage stayed off.
    assert "generation" not in metrics and not (run_dir / "completions.jsonl").exists()
    scores = _held_out_scores(run_dir, run_dir / "model")
    assert len(scores) == metrics["data"]["eval_rows"] == 144
    ranked = sum(c > r for c, r in scores) / len(scores)
    assert ranked >= 0.9, scores
    # The saved model scores as the trainer did at its final eval.
    assert ranked == pytest.approx(metrics["metric_value"], abs=1 / 144)


def test_lora_reward_model_is_saved_merged_and_loads_as_a_sequence_classifier(tmp_path):
    """With LoRA (task type SEQ_CLS: the new score head trained in full beside the adapter),
    model/ holds the merged classifier, model/adapter the adapter; both score alike."""
    import datasets
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.assets import asset_path

    metrics = run_method(tmp_path, "reward", "peft=lora", "method.max_steps=20")
    run_dir = tmp_path / "reward"
    assert metrics["global_step"] == 20 and "eval_accuracy" in metrics["eval"]
    adapter = json.loads((run_dir / "model" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    assert not (run_dir / "model" / "adapter_config.json").exists()
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    merged = _held_out_scores(run_dir, run_dir / "model")
    # The adapter on the base checkpoint as a classifier (the adapter carries the trained head)
    # scores the same texts alike.
    base = AutoModelForSequenceClassification.from_pretrained(asset_path("models/tiny-chatml"), num_labels=1)
    base.config.pad_token_id = config["pad_token_id"]
    with_adapter = PeftModel.from_pretrained(base, str(run_dir / "model" / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    pairs = datasets.load_from_disk(metrics["data"]["path"] + "/eval")
    texts = [p + c for p, c in zip(pairs["prompt"][:8], pairs["chosen"][:8])]
    with torch.no_grad():
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        adapter_scores = with_adapter(**batch).logits[:, 0].tolist()
    assert adapter_scores == pytest.approx([c for c, _ in merged[:8]], abs=1e-4)
