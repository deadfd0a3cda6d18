"""Scorers: each turns completions into one number per completion, under its own name.

- a reward function (`module.function`, called as GRPO calls it: prompts, completions,
  completion_ids and every prompt-row column by keyword), named after the function;
- a reward model (a `*ForSequenceClassification` with one label: a model dir, a finished
  reward-model run dir or a hub id, in evaluate.reward_funcs as in evaluate.reward_models),
  named `rm_<last path component>`; it reads the prompt and completion through its
  own chat template when the prompt is a list of messages and it has one, else the rendered
  prompt followed by the completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.rewards import sources as reward_sources
from rlhf.judge.checks import scorer_entries


@dataclass
class Scorer:
    name: str
    kind: str  # reward_function | reward_model
    source: str  # as the config gives it
    function: Any = None
    model: Any = None
    tokenizer: Any = None


def load(run: Any, prompts: Any) -> list[Scorer]:
    """Every scorer of `run.evaluate`, reward models loaded on the CPU (before the policy: a
    scorer that cannot load fails the job before training, and holds no GPU memory during it);
    reward functions are called once on the first prompt (`trial`). Each entry is resolved as a
    reward is everywhere (rlhf.rewards.sources), which logs its form."""
    from rlhf.core.usercode import check_reward_columns

    scorers = []
    for name, kind, entry, where, models_only in scorer_entries(run.evaluate):
        source = reward_sources.resolve(entry, where, run.code_path, models_only)
        reward, tokenizer = reward_sources.load_one(source, where, run.code_path, run.model.trust_remote_code)
        if tokenizer is not None:  # a reward model scored here (a reward run comes back as a function)
            scorers.append(Scorer(name, kind, entry, model=reward, tokenizer=tokenizer))
        else:
            check_reward_columns([reward], [entry], list(prompts.rows[0]), data="each evaluate prompt row")
            scorer = Scorer(name, kind, entry, function=reward)
            trial(scorer, prompts)
            scorers.append(scorer)
    return scorers


TRIAL_COMPLETION = "A"


def trial(scorer: Scorer, prompts: Any) -> None:
    """Call a reward function once, on the first prompt and a one-letter completion, so that one
    that raises or returns the wrong shape says so now, not after training."""
    from rlhf.judge.generate import Completion
    from rlhf.core.errors import UserCodeError

    sample = Completion(prompt_index=0, sample=0, ids=[], text=TRIAL_COMPLETION, finished=True)
    try:
        score(scorer, prompts, [sample], batch_size=1)
    except UserCodeError as error:
        raise UserCodeError(f"evaluate.reward_funcs: {error} (on a trial call before training)") from None
    except Exception as error:  # the user's function raised: its message, and where it was called
        raise UserCodeError(
            f"evaluate.reward_funcs: {scorer.source!r} raised {type(error).__name__}: {error} on a trial call before "
            f"training (the first prompt of {prompts.source}, completion {TRIAL_COMPLETION!r}); it must return one "
            "number (or None) per completion for any completion text") from None


def score(scorer: Scorer, prompts: Any, completions: list[Any], batch_size: int) -> list[float]:
    """One score per completion (`prompts`: rlhf.judge.prompts.Prompts)."""
    rows = [prompts.rows[c.prompt_index] for c in completions]
    if scorer.function is not None:  # a reward function, or a reward run called as one
        if prompts.conversational:
            texts: list[Any] = [[{"role": "assistant", "content": c.text}] for c in completions]
        else:
            texts = [c.text for c in completions]
        columns = {k: [row[k] for row in rows] for k in rows[0] if k != prompts.column} if rows else {}
        values = scorer.function(prompts=[row[prompts.column] for row in rows], completions=texts,
                                 completion_ids=[c.ids for c in completions], **columns)
        return [float("nan") if v is None else float(v) for v in values]
    return reward_model_scores(scorer, prompts, completions, batch_size)


def reward_model_scores(scorer: Scorer, prompts: Any, completions: list[Any], batch_size: int) -> list[float]:
    import torch

    tokenizer = scorer.tokenizer
    texts = []
    for c in completions:
        prompt = prompts.rows[c.prompt_index][prompts.column]
        if isinstance(prompt, list) and getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": c.text}],
                                                       tokenize=False))
        else:
            texts.append(prompts.texts[c.prompt_index] + c.text)
    values: list[float] = []
    device = next(scorer.model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                truncation=True, add_special_tokens=False).to(device)
            values += scorer.model(**encoded).logits[:, 0].float().tolist()
    return values
