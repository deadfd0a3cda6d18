"""The whole RLHF loop on the embedded task: a policy that answers in the task's format (DPO on
the embedded pairs, at TRL's beta 0.1), a reward model trained on the same preference pairs (`method=reward`), then
online RL against that reward model alone (RLOO, Online DPO, GRPO), judged by the task's known
rule (rlhf.rewards.topic_reward), which the RL step never sees.

Why the DPO policy as the start, not the untrained model: from the untrained model (random
text) RLOO against the learned reward model finds text the model scores far above any real
answer and the topic reward falls to 0 (measured 2026-12-05: reward model score 0.04 -> 3.36,
topic reward 0.0015): reward hacking of a model trained on well-formed answers only. Started
from a policy that answers, as the usual pipeline starts from an SFT model, the loop improves it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import train

MARGIN = 0.1  # topic reward above the starting policy's, and both intervals apart


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory) -> Path:
    """The starting policy: DPO at beta 0.1. (The tiny tuning's beta 0.5 wins more often against
    the untrained model, but its answers end less often, 0.22-0.53 over seeds against 0.48: from
    it, RLOO gained 0.35 -> 0.43, from this one 0.31 -> 0.71, measured 2026-12-05.)"""
    tmp = tmp_path_factory.mktemp("policy")
    train(tmp, "method.beta=0.1", run_dir=tmp / "policy")
    return tmp / "policy"


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reward")
    train(tmp, "method=reward", run_dir=tmp / "rm")
    metrics = json.loads((tmp / "rm" / "metrics.json").read_text())
    assert metrics["metric"] == "eval_accuracy" and metrics["metric_value"] >= 0.9, metrics["eval"]
    return tmp / "rm"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rloo", "online_dpo", "grpo"])
def test_online_rl_against_a_trained_reward_model_alone_raises_the_known_reward(method, reward_run, policy_run,
                                                                                 tmp_path):
    run_dir = tmp_path / method
    # The policy is a fine-tune of the tiny model: the command names the tiny tuning, which a
    # checkpoint other than the option's own leaves otherwise (rlhf.launch.companions).
    # GRPO with one pass per generation batch: the tiny GRPO tuning's second pass (there to make
    # the GRPO presets' trajectories differ) moved this policy too far on the reward model's score
    # alone (topic reward 0.34 against 0.35 at the start, where one pass reached 0.69).
    passes = ["method.num_iterations=1"] if method == "grpo" else []
    train(tmp_path, f"method={method}", f"tuning=tiny_{method}", *passes, f"method.reward_funcs=[{reward_run}]",
          f"model.name_or_path={policy_run / 'model'}", "method.beta=0.1", "method.learning_rate=3e-4",
          run_dir=run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["method"]["reward_funcs"] == [str(reward_run)]  # the RL step's only reward is the model
    log = (run_dir / "train.log").read_text()
    assert f"method.reward_funcs[0] = {reward_run}: reward model of the finished run" in log
    block = json.loads((run_dir / "metrics.json").read_text())["generation"]
    figures, intervals = block["metrics"], block["intervals"]
    # The reference of the stage is the starting policy (the DPO run), judged on the same prompts.
    assert block["reference"]["model"] == str(policy_run / "model")
    assert figures["topic_reward"] > figures["reference/topic_reward"] + MARGIN, figures
    assert intervals["topic_reward"]["ci_low"] > intervals["reference/topic_reward"]["ci_high"], intervals
    assert intervals["win_rate"]["ci_low"] > 0.5, intervals["win_rate"]
    # And far above the untrained model's answers (the embedded evaluate's cached reference).
    base = json.loads((policy_run / "metrics.json").read_text())["generation"]["metrics"]["reference/topic_reward"]
    assert figures["topic_reward"] > base + 2 * MARGIN
    # What the average hides: each figure per category of the prompts, and the categories whose
    # every completion is empty named (read back from the completions themselves; seen from
    # outside once: after RLOO every `tool` answer was empty while the average rose).
    rows = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines() if line.strip()]
    categories = sorted({r["columns"]["category"] for r in rows})
    groups = block["groups"]
    assert groups["column"] == "category" and sorted(groups["figures"]) == categories == \
        ["animal", "colour", "fruit", "tool"]
    for category in categories:
        mine = [r for r in rows if r["columns"]["category"] == category]
        assert groups["figures"][category]["prompts"] == len(mine)
        assert groups["figures"][category]["empty"] == pytest.approx(
            sum(not r["completion"].strip() for r in mine) / len(mine))
    empty = [c for c in categories if all(not r["completion"].strip() for r in rows if r["columns"]["category"] == c)]
    assert groups["all_empty"] == empty
    for category in empty:
        assert f"every completion for the prompts with category={category} is empty" in log
