"""Padding-free preference batches: each micro-batch's sequences run as one packed row.

TRL 1.16's preference trainers pad every sequence of a micro-batch (DPO's chosen and rejected
alike) to the longest one, and its DPO `padding_free` is switched off ("temporarily
unavailable"). On long-tailed data most of a padded batch is padding, and on CPU TRL's fused LM
head scores every padded position too. Here the trainers and their collators stay TRL's; what
changes is the model call. The policy's (and the reference's) `forward` is wrapped so that a
padded batch `(B, L)` becomes one row of the `N` real tokens, position ids restarting at 0 for
each sequence, and the model's outputs are scattered back to TRL's padded layout:

- a causal LM under TRL's fused head (DPO, IPO, KTO): the per-token log-probs `(B, L-1)`;
- a causal LM returning logits (ORPO, SimPO through CPOTrainer): the logits `(B, L, V)`, zero at
  padded positions (TRL's `logits/chosen|rejected` metrics average over every position, padding
  included, so those two logged means differ; the losses and log-probs do not);
- a sequence classifier (the reward model): each sequence's score, pooled at the token the
  padded forward pools at (the rightmost token that is not the pad id).

Attention within each sequence only, the sequences read from the position ids (each 0 starts
one): flash-attention models take the packed row natively (transformers reads the bounds there
and calls the varlen kernel); sdpa models are set to `per_sequence_sdpa`, which calls torch's
sdpa once per sequence of a packed row (no N x N mask) and is plain sdpa for every other call.
A model this cannot serve (eager or another attention kernel, sliding-window or encoder-decoder
attention, extra per-token inputs, a mask with holes) is said once in the log and runs padded.

Exactness (tests/test_padding_free.py): per-sequence log-probs, losses and gradient norms equal
the padded step's within fp32 rounding, rtol 1e-5 and atol 1e-6.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Callable
from typing import Any

from rlhf.methods.base import FUSED_LOGPS, PADDING_FREE_KINDS, SCORES
from rlhf.trl import written_for
from rlhf.trl.fused_logps import causal_lm

WRITTEN_FOR = written_for(trl=">=1.16,<1.17", transformers=">=5.20,<5.24")

log = logging.getLogger("rlhf")

# How a method's trainer calls its model (MethodSpec.padding_free).
KINDS = PADDING_FREE_KINDS

KERNEL = "rlhf_per_sequence_sdpa"
# Attention implementations that take a packed row natively (sdpa ones through KERNEL).
NATIVE = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
# Inputs a packed call carries; any other tensor input (token types, images) makes it run padded.
CARRIED = {"input_ids", "attention_mask", "labels", "use_cache", "fused_lm_head", "position_ids",
           "output_router_logits", "num_items_in_batch", "return_dict"}


@dataclasses.dataclass
class Tally:
    """What the packed calls of a run did: calls, real tokens, and the padding tokens the padded
    layout would have run (B x L - N per call), plus the calls that ran padded and why."""

    calls: int = 0
    tokens: int = 0
    padding_avoided: int = 0
    padded_calls: int = 0
    reasons: list[str] = dataclasses.field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The figures as metrics.json keeps them: the layout, tokens, padding avoided and its share."""
        total = self.tokens + self.padding_avoided
        return {"layout": "padding_free", "packed_calls": self.calls, "padded_calls": self.padded_calls,
                "tokens": self.tokens, "padding_tokens_avoided": self.padding_avoided,
                "padding_share_avoided": round(self.padding_avoided / total, 4) if total else 0.0,
                "padded_because": sorted(self.reasons)}

    def padded(self, reason: str) -> None:
        self.padded_calls += 1
        if reason not in self.reasons:
            self.reasons.append(reason)
            log.warning("padding-free: a model call runs padded: %s", reason)


@dataclasses.dataclass
class Layout:
    """A padded batch's real tokens as one packed row.

    Fields: `mask` (B, L) booleans, the real tokens (each row's a contiguous run); `lengths` each
    sequence's length; `position_ids` (1, N) restarting at 0 for each sequence; `starts` (N,)
    booleans marking each sequence's first token."""

    mask: Any
    lengths: list[int]
    position_ids: Any
    starts: Any

    @classmethod
    def of(cls, attention_mask: Any) -> Layout:
        """The layout of a (B, L) attention mask whose rows are each one run of ones."""
        import torch

        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)
        total = int(lengths.sum())
        offsets = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths, output_size=total)
        position_ids = (torch.arange(total, device=mask.device) - offsets).unsqueeze(0)
        starts = torch.zeros(total, dtype=torch.bool, device=mask.device)
        starts[(torch.cumsum(lengths, 0) - lengths)[lengths > 0]] = True
        return cls(mask, lengths.tolist(), position_ids, starts)

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def pack(self, padded: Any) -> Any:
        """(B, L, ...) -> (1, N, ...): the real tokens' entries, in order."""
        return padded[self.mask].unsqueeze(0)

    def unpack(self, packed: Any) -> Any:
        """(1, N, ...) -> (B, L, ...), zero where the padded batch has padding."""
        flat = packed[0]
        out = flat.new_zeros((*self.mask.shape, *flat.shape[1:]))
        return out.masked_scatter(self.mask.view(*self.mask.shape, *[1] * (flat.dim() - 1)).expand_as(out), flat)

    def unpack_shifted(self, packed: Any) -> Any:
        """A per-token figure of the next token, (1, N - 1) -> TRL's (B, L - 1): at [b, t] the
        figure of token t + 1 of row b given the tokens before it, zero where either token is
        padding. Entries predicting across a sequence boundary are dropped."""
        flat = packed[0]
        keep = ~self.starts[1:]
        both = self.mask[:, 1:] & self.mask[:, :-1]
        return flat.new_zeros(both.shape).masked_scatter(both, flat[keep])


def contiguous(mask: Any) -> bool:
    """Whether each row's real tokens are one run (right-, left- or un-padded), which packing needs."""
    changes = (mask[:, 1:] != mask[:, :-1]).sum(dim=1) + mask[:, 0].long() + mask[:, -1].long()
    return bool((changes <= 2).all())


def sequence_edges(position_ids: Any) -> list[int]:
    """The sequences of a packed row as transformers' flash-attention path reads them from the
    position ids: each 0 starts one (the row's first token always does). Returns the start of
    every sequence, then the row's length."""
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().view(-1).tolist()
    return [*([0] if not starts or starts[0] != 0 else []), *starts, flat.numel()]


def per_sequence_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, position_ids: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function signature: sdpa, except on a row of packed sequences.

    A call with no mask, one row, as many queries as keys and position ids (a training forward:
    a packed row, or one sequence) runs causal sdpa within each sequence, the sequences found
    as flash attention finds them (`sequence_edges`): no attention across sequences and no
    N x N mask at all. Any other call (a padded batch with its mask, generation with a cache) is
    transformers' sdpa as the model would have run it.

    Args:
        module: the attention layer (its `num_key_value_groups` repeats grouped key/value heads).
        query, key, value: (batch, heads, length, head_dim).
        attention_mask: the 4D mask transformers built, or None (a call without a 2D mask).
        dropout, scaling: sdpa's dropout and scale.
        position_ids: (batch, length), restarting at 0 at each sequence of a packed row.
    Returns:
        The attention output (batch, length, heads, head_dim) and None (no weights)."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    packed = (attention_mask is None and position_ids is not None and query.shape[0] == 1
              and query.shape[2] == key.shape[2])
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    edges = sequence_edges(position_ids)
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling, is_causal=True)
        for s, e in zip(edges[:-1], edges[1:]) if e > s]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def per_sequence_mask(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    """The mask function that goes with `per_sequence_sdpa`: sdpa's mask for a call with a 2D
    attention mask; none without one (the kernel then keeps each sequence to itself)."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_kernel() -> None:
    """`per_sequence_sdpa` and its mask function in transformers' registries, as KERNEL."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(KERNEL, per_sequence_sdpa)
    AttentionMaskInterface.register(KERNEL, per_sequence_mask)


def unpackable(model: Any) -> str | None:
    """Why `model` cannot run packed rows (None: it can)."""
    config = getattr(model, "config", None)
    if config is None:
        return f"{type(model).__name__} has no transformers config"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False):
        return f"{type(model).__name__} is an encoder-decoder"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in (*NATIVE, "sdpa", KERNEL):
        return f"{type(model).__name__} attends with {implementation!r}; packed rows need one of " + \
            ", ".join((*NATIVE, "sdpa"))
    if "sliding_attention" in (getattr(text, "layer_types", None) or ()) or (
            getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True)):
        return f"{type(model).__name__} has sliding-window attention, which the per-sequence kernel does not apply"
    return None


def attend_per_sequence(model: Any) -> None:
    """An sdpa model set to KERNEL for good: sdpa for every call but a packed row's, which stays
    within each sequence. Set once and not switched back, so that activation checkpointing's
    recomputation in the backward pass runs the same kernel as the forward. Flash attention is
    left as it is: it takes packed rows itself."""
    if model.config._attn_implementation == "sdpa":
        register_kernel()
        model.config._attn_implementation = KERNEL


def _inputs(args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    if args:
        if len(args) > 1 or "input_ids" in kwargs:
            return {}
        kwargs = {"input_ids": args[0], **kwargs}
    return kwargs


def _why_padded(kwargs: dict[str, Any]) -> str | None:
    """Why a training call's inputs cannot be packed (None: they can)."""
    import torch

    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    if ids is None or mask is None or ids.dim() != 2 or mask.shape != ids.shape:
        return "no (batch, length) input_ids with an attention mask"
    extra = sorted(k for k, v in kwargs.items() if k not in CARRIED and isinstance(v, torch.Tensor))
    if extra:
        return f"inputs {', '.join(extra)} are not packed"
    if not contiguous(mask.bool()):
        return "an attention mask with holes"
    return None


def _trains(kwargs: dict[str, Any]) -> bool:
    """Whether a call is a training forward (no cache): generation runs as the model runs it."""
    return kwargs.get("past_key_values") is None and not kwargs.get("use_cache")


def _packed_call(kwargs: dict[str, Any], layout: Layout) -> dict[str, Any]:
    call = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "position_ids", "labels")}
    # The sequence bounds travel as the position ids alone: flash attention and per_sequence_sdpa
    # both read them there.
    call.update(input_ids=layout.pack(kwargs["input_ids"]), position_ids=layout.position_ids)
    return call


def causal_forward(model: Any, forward: Callable, tally: Tally, fused: bool) -> Callable:
    """`forward` of the causal LM `model`, packed for training calls: with TRL's fused head
    (`fused`) the per-token outputs come back in TRL's padded (B, L - 1) layout, else the logits
    in (B, L, V)."""

    def packed(self: Any, *args: Any, **kwargs: Any) -> Any:
        inputs = _inputs(args, kwargs)
        if not inputs or not _trains(inputs) or (fused and not inputs.get("fused_lm_head")):
            return forward(*args, **kwargs)
        reason = _why_padded(inputs)
        if reason is not None:
            tally.padded(reason)
            return forward(*args, **kwargs)
        layout = Layout.of(inputs["attention_mask"])
        call = _packed_call(inputs, layout)
        if fused:
            labels = layout.pack(inputs["labels"])[0].clone()
            labels[layout.starts] = -100  # a sequence's first token is predicted by no token of its own
            call["labels"] = labels.unsqueeze(0)
        out = forward(**call)
        _count(tally, layout)
        if fused:
            for name in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask"):
                if getattr(out, name, None) is not None:
                    out[name] = layout.unpack_shifted(getattr(out, name))
        else:
            out["logits"] = layout.unpack(out.logits)
        return out

    return types.MethodType(packed, model)


def score_forward(model: Any, forward: Callable, tally: Tally) -> Callable:
    """`forward` of the sequence classifier `model`, packed: the backbone runs the packed row and
    each sequence's score is taken where the padded forward pools (the rightmost non-pad token)."""

    def packed(self: Any, *args: Any, **kwargs: Any) -> Any:
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutputWithPast

        inputs = _inputs(args, kwargs)
        if not inputs or not _trains(inputs) or inputs.get("labels") is not None:
            return forward(*args, **kwargs)
        reason = _why_padded(inputs)
        pad_id = model.config.get_text_config().pad_token_id
        if reason is None and pad_id is None:
            reason = "the model has no pad token id to pool by"
        if reason is not None:
            tally.padded(reason)
            return forward(*args, **kwargs)
        ids = inputs["input_ids"]
        layout = Layout.of(inputs["attention_mask"])
        # The padded forward's pooling position, then its place in the packed row.
        positions = torch.arange(ids.shape[1], device=ids.device)
        pool = (positions * (ids != pad_id)).argmax(-1)
        rows = torch.arange(ids.shape[0], device=ids.device)
        if not bool(layout.mask[rows, pool].all()):
            tally.padded("a sequence pools at a padded position")
            return forward(*args, **kwargs)
        packed_index = torch.cumsum(layout.mask.flatten(), 0).view(layout.mask.shape)[rows, pool] - 1
        call = _packed_call(inputs, layout)
        hidden = getattr(model, model.base_model_prefix)(**call).last_hidden_state
        _count(tally, layout)
        return SequenceClassifierOutputWithPast(logits=model.score(hidden[0, packed_index]))

    return types.MethodType(packed, model)


def _count(tally: Tally, layout: Layout) -> None:
    tally.calls += 1
    tally.tokens += layout.tokens
    tally.padding_avoided += layout.mask.numel() - layout.tokens


def wrap(model: Any, kind: str, tally: Tally) -> str | None:
    """`model`'s forward packed for calls of `kind` (one of KINDS). Returns why it cannot be
    (the model then runs padded), or None."""
    if kind not in KINDS:
        raise ValueError(f"padding-free kind {kind!r} is not one of {', '.join(KINDS)}")
    target = causal_lm(model)  # a PEFT model's base, whose layers carry the adapter
    reason = unpackable(target)
    if reason is not None:
        return reason
    attend_per_sequence(target)
    forward = target.forward
    if kind == SCORES:
        target.forward = score_forward(target, forward, tally)
    else:
        target.forward = causal_forward(target, forward, tally, fused=kind == FUSED_LOGPS)
    return None


def apply(trainer: Any, kind: str) -> Tally | None:
    """The trainer's policy and reference model (if it holds one) packed (`wrap`); the layout
    said in the log. Returns the run's Tally, or None when the policy runs padded."""
    tally = Tally()
    reason = wrap(trainer.model, kind, tally)
    if reason is not None:
        log.warning("padding-free: %s, so this run pads its batches as TRL does", reason)
        return None
    reference = getattr(trainer, "ref_model", None)
    if reference is not None:
        why = wrap(reference, kind, tally)
        if why is not None:
            log.warning("padding-free: the reference model runs padded: %s", why)
    log.info("batch layout: padding-free (each micro-batch's sequences in one row; method.padding_free=false "
             "pads them as TRL does)")
    return tally
