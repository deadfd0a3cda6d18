"""Sampling completions with transformers, and their token log-probs under a model.

Decoding is repeatable: the same model, prompts, decoding settings, seed and batch size give
the same completions, in a training job and in `python -m rlhf.evaluate` alike, because both
call `sample` with the same arguments. The caller's random state is left as it was (a stage
run mid-training does not change what training samples next).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass
class Completion:
    prompt_index: int
    sample: int
    ids: list[int]  # generated tokens, up to and including the end-of-sequence token if one came
    text: str  # decoded without special tokens
    finished: bool  # ended with an end-of-sequence token (not cut at max_new_tokens)


def decoding_of(evaluate: Any) -> dict[str, Any]:
    """The settings that decide what is sampled: compared and cached as one record."""
    return {"max_new_tokens": evaluate.max_new_tokens, "temperature": evaluate.temperature, "top_p": evaluate.top_p,
            "samples_per_prompt": evaluate.samples_per_prompt, "seed": evaluate.seed,
            "batch_size": evaluate.batch_size}


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@contextlib.contextmanager
def evaluating(model: Any):
    """The model in eval mode with its random state untouched, back as it was afterwards."""
    import torch

    was_training = model.training
    model.eval()
    # The CUDA random state is forked only where CUDA was initialised: a CPU job on a GPU host
    # never starts the driver (torch.cuda.is_available() or current_device() would).
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield
    finally:
        model.train(was_training)


def device_of(model: Any) -> Any:
    return next(model.parameters()).device


def sample(model: Any, tokenizer: Any, prompts: list[str], decoding: dict[str, Any]) -> list[Completion]:
    """`samples_per_prompt` completions of every prompt, in prompt order."""
    import torch
    from transformers import GenerationConfig

    eos = eos_ids(model, tokenizer)
    greedy = decoding["temperature"] == 0
    config = GenerationConfig(
        max_new_tokens=decoding["max_new_tokens"], do_sample=not greedy,
        temperature=None if greedy else decoding["temperature"], top_p=None if greedy else decoding["top_p"],
        top_k=None, num_return_sequences=decoding["samples_per_prompt"],
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, use_cache=True)
    out: list[Completion] = []
    size = decoding["batch_size"]
    with evaluating(model):
        torch.manual_seed(decoding["seed"])
        for start in range(0, len(prompts), size):
            batch = prompts[start:start + size]
            encoded = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(device_of(model))
            generated = model.generate(**encoded, generation_config=config)
            new = generated[:, encoded["input_ids"].shape[1]:].tolist()
            for row, ids in enumerate(new):
                end = next((i for i, t in enumerate(ids) if t in eos), None)
                kept = ids if end is None else ids[:end + 1]
                out.append(Completion(prompt_index=start + row // decoding["samples_per_prompt"],
                                      sample=row % decoding["samples_per_prompt"], ids=kept,
                                      text=tokenizer.decode(kept, skip_special_tokens=True),
                                      finished=end is not None))
    return out


def sequence_logps(model: Any, tokenizer: Any, prompts: list[str], completions: list[Completion],
                   temperature: float, batch_size: int) -> list[float]:
    """Per completion, the sum of its tokens' log-probs under `model`, from logits divided by
    the sampling temperature (1 for greedy): the distribution the tokens were drawn from. The
    log-probs come from TRL's fused head (rlhf.trl.fused_logps): the output layer is applied in
    tiles, never as the batch's whole (batch, length, vocabulary) logits."""
    import torch

    from rlhf.trl.fused_logps import token_logps

    scale = temperature if temperature > 0 else 1.0
    totals: list[float] = []
    with evaluating(model):
        device = device_of(model)
        for start in range(0, len(completions), batch_size):
            batch = completions[start:start + batch_size]
            prompt_ids = [tokenizer(prompts[c.prompt_index], add_special_tokens=False)["input_ids"] for c in batch]
            width = max(len(p) + len(c.ids) for p, c in zip(prompt_ids, batch))
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, (p, c) in enumerate(zip(prompt_ids, batch)):  # left-padded, as generated
                pad = width - len(p) - len(c.ids)
                ids[row, pad:] = torch.tensor(p + c.ids)
                mask[row, pad:] = 1
                scored[row, pad + len(p):] = True
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logps = token_logps(model, ids.to(device), mask.to(device), positions.to(device), scored.to(device), scale)
            totals += logps.float().sum(1).tolist()
    return totals
