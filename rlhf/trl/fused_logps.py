"""Per-token log-probs of given tokens without the (batch, length, vocabulary) logits.

TRL 1.16's `trl.trainer.utils.add_fused_lm_head` patches a causal LM's `forward`: called with
`labels` and `fused_lm_head=True`, it runs the backbone and projects its hidden states through
the output layer in tiles, returning each next-token label's log-prob (logits divided by a
temperature) instead of the logits. On a vocabulary of 152k that is the difference between a few
tiles and two or three fp32 copies of batch x length x 152k values (the log-softmax and the
scaling each make one). TRL's own trainers patch the models they train; the generation eval
stage scores models it does not own (a trained policy, the reference, a PEFT model with its
adapter on or off), so the patch here is scoped: `token_logps` applies it to the transformers
model inside (a PEFT model's base, whose layers carry the adapter), calls it, and puts the
model's own `forward` back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rlhf.trl import written_for

WRITTEN_FOR = written_for(trl=">=1.16,<1.17")


def causal_lm(model: Any) -> Any:
    """The transformers model that computes `model`'s logits: a PEFT model's base (its LoRA
    layers live in the base's modules, and `disable_adapter()` switches them there), else itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def fused_head(model: Any, temperature: float) -> Iterator[Any]:
    """`model`'s transformers model with TRL's fused head on its `forward` for the duration (the
    output layer in fp32), the instance's own `forward` restored afterwards."""
    from trl.trainer.utils import add_fused_lm_head

    inner = causal_lm(model)
    own = inner.__dict__.get("forward")  # an instance-level forward someone set, if any
    # The head in fp32, outside autocast: logits rounded to bf16 (a relative 0.4%) moved a
    # 10-token completion's log-prob by ~0.02 nats on the tiny model, the size of a KL it reports.
    add_fused_lm_head(inner, temperature=temperature, cast_lm_head_to_fp32=True)
    try:
        yield inner
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own


def token_logps(model: Any, input_ids: Any, attention_mask: Any, position_ids: Any, scored: Any,
                temperature: float) -> Any:
    """Each token's log-prob under `model` given the tokens before it, at the positions `scored`
    marks, from logits divided by `temperature`.

    Args:
        model: a causal LM (transformers, or PEFT around one), on the device of the tensors.
        input_ids, attention_mask, position_ids: (batch, length) tensors, left-padded or not.
        scored: (batch, length) booleans: the tokens whose log-prob is wanted (the first token
            of a row has no prediction and must not be marked).
        temperature: the logits' divisor (1: the model's own distribution).

    Returns:
        A (batch, length - 1) float tensor: at [b, t-1] the log-prob of token t of row b where
        `scored[b, t]`, 0 elsewhere.
    """
    labels = input_ids.masked_fill(~scored, -100)
    with fused_head(model, temperature) as inner:
        out = inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, labels=labels,
                    fused_lm_head=True)
    return out.log_probs
