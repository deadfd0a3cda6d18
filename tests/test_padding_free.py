"""Padding-free preference batches (rlhf.trl.padding_free): the same numbers as padded training.

For each method that runs packed rows (DPO, IPO, KTO, the reward model, ORPO, SimPO) the
platform builds its TRL trainer twice from the same config, `method.padding_free` on and off,
and runs one training micro-batch of rows whose lengths differ by 4x and more through TRL's own
`compute_loss`: the model's per-sequence outputs (each token's log-prob, the logits at real
tokens, the scores), the loss, every metric the trainer logs and the gradient norm agree within
fp32 rounding (TOLERANCE). A packed row whose second sequence's position ids are not restarted
is seen to break the agreement.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import read_history, train
from rlhf.launch.compose import compose_job
from rlhf.run import rundir

# fp32 rounding: the packed and the padded forward sum the same products in another order.
TOLERANCE = dict(rel=1e-5, abs=1e-6)

# TRL's means over every logits position, padding included: padding-free leaves padded
# positions' logits at zero, so these two logged means differ by design (the module says so).
PADDING_DEPENDENT = {"logits/chosen", "logits/rejected"}

WORDS = ("mouse", "red", "pear", "tiger", "blue", "hammer", "grape", "lion")


def _text(n: int, offset: int) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def write_rows(path: Path, unpaired: bool) -> Path:
    """Rows whose prompts and answers run from 1 to 150 words, so a batch of 4 is mostly padding
    in the padded layout."""
    rows = []
    for i in range(16):
        question = "Give me one thing. " + _text([1, 12, 3, 50][i % 4], i)
        chosen, rejected = _text([1, 150, 6, 2][i % 4], i + 1), _text([100, 1, 9, 3][(i + 1) % 4], i + 2)
        if unpaired:
            rows.append({"question": question, "completion": chosen if i % 2 else rejected, "label": bool(i % 2)})
        else:
            rows.append({"question": question, "chosen": chosen, "rejected": rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build(tmp: Path, method: str, padding_free: bool, *overrides: str):
    """The platform's TRL trainer for `method` on the rows of varied lengths, as a job builds it."""
    from rlhf.job import runner

    data = write_rows(tmp / f"{method}.jsonl", unpaired=method == "kto")
    config = compose_job([f"method={method}", f"dataset.path={data}", "dataset.type=chatml.intel", "dataset.eval=[]",
                          "evaluate.enabled=false", "seed=3", "method.micro_batch_size=4",
                          f"method.padding_free={str(padding_free).lower()}", f"cache_dir={tmp / 'cache'}",
                          *overrides])
    run_dir = tmp / f"{method}-{padding_free}"
    rundir.prepare(run_dir, OmegaConf.to_container(config, resolve=True))
    job = runner.prepare(run_dir, None)
    return job, runner.build(job, [])


def one_step(trainer) -> dict:
    """One training micro-batch through TRL's compute_loss: the model's outputs, loss, logged
    metrics and gradient norm."""
    from rlhf.trl.fused_logps import causal_lm

    model = causal_lm(trainer.model)
    outputs = []
    hook = model.register_forward_hook(lambda module, args, kwargs, out: outputs.append((kwargs["attention_mask"], out)),
                                       with_kwargs=True)
    trainer.model.train()
    if trainer.args.activation_checkpointing:  # as Trainer.train switches it on
        trainer.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=trainer.args.activation_checkpointing_kwargs)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    try:
        loss = trainer.compute_loss(trainer.model, batch)
    finally:
        hook.remove()
    loss.backward()
    norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in trainer.model.parameters() if p.grad is not None))
    stored = getattr(trainer, "_metrics", None) or getattr(trainer, "_stored_metrics", {})
    metrics = {k: [float(x) for x in v] for k, v in stored["train"].items()}
    return {"loss": float(loss.detach()), "norm": norm, "metrics": metrics, "outputs": outputs, "batch": batch}


def per_sequence(mask, out) -> list:
    """What the model gave per sequence: each token's log-prob (TRL's fused head), the logits at
    real tokens, or the scores."""
    if getattr(out, "log_probs", None) is not None:
        return list(out.log_probs.detach())
    logits = out.logits.detach()
    if logits.dim() == 2:  # a sequence classifier's scores
        return list(logits)
    return [logits[b][mask[b].bool()] for b in range(logits.shape[0])]


def assert_same(packed: dict, padded: dict) -> None:
    import torch

    assert packed["loss"] == pytest.approx(padded["loss"], **TOLERANCE)
    assert packed["norm"] == pytest.approx(padded["norm"], **TOLERANCE)
    assert packed["norm"] > 0
    assert packed["metrics"].keys() == padded["metrics"].keys()
    for key, values in padded["metrics"].items():
        if key.split("/", 1)[-1] not in PADDING_DEPENDENT and key not in PADDING_DEPENDENT:
            assert packed["metrics"][key] == pytest.approx(values, **TOLERANCE), key
    assert len(packed["outputs"]) == len(padded["outputs"]) >= 1
    for (mask, a), (_, b) in zip(packed["outputs"], padded["outputs"]):
        for x, y in zip(per_sequence(mask, a), per_sequence(mask, b), strict=True):
            assert torch.allclose(x, y, rtol=TOLERANCE["rel"], atol=TOLERANCE["abs"])


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Each method's one step, padding-free and padded, with its padded batch's padding share."""
    found = {}

    def step(method: str, padding_free: bool, *overrides: str):
        key = (method, padding_free, overrides)
        if key not in found:
            job, trainer = build(tmp_path_factory.mktemp(method), method, padding_free, *overrides)
            found[key] = {**one_step(trainer), "tally": job.layout}
        return found[key]

    return step


# Activation checkpointing (the GPU hardware options' default) recomputes each layer's forward
# in the backward pass, outside the packed call: it must attend per sequence there too.
CASES = [("dpo", ()), ("ipo", ()), ("kto", ()), ("reward", ()), ("orpo", ()), ("simpo", ()),
         ("dpo", ("hardware.activation_checkpointing=true",))]


@pytest.mark.parametrize("method,overrides", CASES, ids=[m + "".join(f"-{o}" for o in x) for m, x in CASES])
def test_a_padding_free_step_gives_the_padded_steps_numbers(steps, method, overrides):
    packed, padded = steps(method, True, *overrides), steps(method, False, *overrides)
    assert packed["tally"] is not None and packed["tally"].calls >= 1 and padded["tally"] is None
    # Very different lengths in one batch: the longest sequence at least 4 times the shortest,
    # and a quarter of the padded layout padding.
    lengths = padded["outputs"][0][0].sum(dim=1)
    assert float(lengths.max() / lengths.min()) >= 4
    assert packed["tally"].padding_avoided > packed["tally"].tokens / 3
    assert_same(packed, padded)


def test_a_sequence_whose_position_ids_do_not_restart_breaks_the_agreement(steps, tmp_path, monkeypatch):
    """The mutation the parity rests on: the second sequence of each packed row keeps counting
    from the first, so attention runs across the two and the log-probs move."""
    from rlhf.trl import padding_free

    padded = steps("dpo", False)
    right = padding_free.Layout.of

    def not_restarted(mask):
        layout = right(mask)
        first, second = layout.lengths[0], layout.lengths[1]
        layout.position_ids = layout.position_ids.clone()
        layout.position_ids[0, first:first + second] += first
        return layout

    monkeypatch.setattr(padding_free.Layout, "of", staticmethod(not_restarted))
    _, trainer = build(tmp_path, "dpo", True)
    with pytest.raises(AssertionError):
        assert_same(one_step(trainer), padded)


def test_precomputed_reference_log_probs_are_the_same_either_way(steps):
    """The reference log-probs precomputed before training (DPO's default here) are the values
    the padded layout precomputes: the packed step's rewards agree because of them."""
    packed, padded = steps("dpo", True), steps("dpo", False)
    import torch

    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        assert torch.equal(packed["batch"][key], padded["batch"][key])


def test_a_model_that_cannot_take_packed_rows_says_why():
    """An attention kernel the packed path does not serve (eager, flex) or sliding-window
    attention: `wrap` names it, and the model keeps its own forward."""
    import torch

    from rlhf.trl import padding_free

    model = torch.nn.Linear(2, 2)
    forward = model.forward
    model.config = type("Config", (), {"_attn_implementation": "eager", "is_encoder_decoder": False})()
    tally = padding_free.Tally()
    for kernel in ("eager", "flex_attention"):
        model.config._attn_implementation = kernel
        reason = padding_free.wrap(model, padding_free.FUSED_LOGPS, tally)
        assert reason is not None and kernel in reason
    model.config._attn_implementation = "sdpa"
    model.config.sliding_window = 4096
    assert "sliding-window" in padding_free.wrap(model, padding_free.FUSED_LOGPS, tally)
    assert model.forward == forward and model.config._attn_implementation == "sdpa"


def test_the_kernel_is_sdpa_for_every_call_but_a_packed_rows():
    """With a mask, with a cache (fewer queries than keys), or with a batch of rows, the kernel
    is transformers' sdpa, bit for bit; on one row without a mask it keeps each sequence (each
    0 of the position ids) to itself."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from rlhf.trl import padding_free

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 1, True
    q, k, v = (torch.randn(2, 2, 6, 4) for _ in range(3))
    mask = torch.tril(torch.ones(6, 6, dtype=torch.bool)).expand(2, 1, 6, 6)
    for args in ((q, k, v, mask), (q, k, v, None), (q[:1, :, -1:], k[:1], v[:1], None)):
        assert torch.equal(padding_free.per_sequence_sdpa(module, *args, position_ids=torch.arange(6)[None])[0],
                           sdpa_attention_forward(module, *args)[0])
    packed = padding_free.per_sequence_sdpa(module, q[:1], k[:1], v[:1], None,
                                            position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]))[0]
    for s in (0, 3):
        alone = sdpa_attention_forward(module, q[:1, :, s:s + 3], k[:1, :, s:s + 3], v[:1, :, s:s + 3], None)[0]
        assert torch.allclose(packed[:, s:s + 3], alone, atol=1e-6)


def test_a_mask_with_holes_runs_padded_and_is_said_once():
    import torch

    from rlhf.trl import padding_free

    assert padding_free.contiguous(torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]]).bool())
    assert not padding_free.contiguous(torch.tensor([[1, 0, 1, 0]]).bool())
    tally = padding_free.Tally()
    calls = []

    def forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return None

    model = torch.nn.Module()
    model.config = None
    wrapped = padding_free.causal_forward(model, forward, tally, fused=True)
    ids = torch.ones(2, 4, dtype=torch.long)
    for _ in range(2):
        wrapped(input_ids=ids, attention_mask=torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0]]), labels=ids,
                fused_lm_head=True, use_cache=False)
    assert calls == [(2, 4), (2, 4)] and tally.padded_calls == 2 and tally.reasons == ["an attention mask with holes"]


def test_a_run_says_its_layout_and_the_padding_it_avoided(tmp_path):
    """Through the CLI: metrics.json and the log say which layout ran and the padding avoided;
    the padded run's losses are the padding-free run's within fp32 rounding."""
    free, padded = tmp_path / "free", tmp_path / "padded"
    common = ("method.max_steps=3", "method.logging_steps=1", "evaluate.enabled=false")
    out = train(tmp_path, *common, run_dir=free)
    train(tmp_path, *common, "method.padding_free=false", run_dir=padded)
    said = out.stderr + out.stdout
    assert "batch layout: padding-free (each micro-batch" in said
    batches = rundir.read_metrics(free)["batches"]
    assert batches["layout"] == "padding_free" and batches["padding_tokens_avoided"] > 0
    assert f"{batches['padding_tokens_avoided']} padding tokens avoided" in said
    assert batches["padding_share_avoided"] == pytest.approx(
        batches["padding_tokens_avoided"] / (batches["tokens"] + batches["padding_tokens_avoided"]), abs=1e-4)
    assert rundir.read_metrics(padded)["batches"] == {"layout": "padded", "why": "method.padding_free=false"}
    losses = [[h["loss"] for h in read_history(d) if "loss" in h] for d in (free, padded)]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], **TOLERANCE)
