"""Bench section `lengths`: padding-free batches against a plain TRL script on long-tailed data.

The shape: a model built like the tiny one but with Qwen2.5's vocabulary size (151936 output
rows; the LM head is most of a small model's work per token), and preference rows whose prompt
and answer lengths are long-tailed: lognormal, medians of PROMPT_MEDIAN and ANSWER_MEDIAN
tokens, a tail cut at MAX_LENGTH (2048) for prompt plus answer. These are parameters chosen to
have the shape of public preference sets (a few hundred tokens at the median, a few answers near
the limit), not lengths measured from one here: this machine reaches no dataset hub. Every word
of the rows is one token of the tiny tokenizer, so lengths in words are lengths in tokens.

Per method (DPO, KTO, the reward model) and repeat, the platform (padding-free, its default)
and the plain TRL script (rlhf.dev.bench.plain_trl_lengths: TRL's trainer as a careful user
sets it, fp32, the reference log-probs precomputed where TRL can, the same batch, one torch
thread) train the same rows in the same order, each alone on one core, one after the other
(`alone`). Measured step against step (a step's time depends on its batch's lengths): the
median step time and the total over the steps after the first, real tokens per second, the peak
RSS, the padding share of TRL's batches (from its collator), and how far the two sides' per-step
losses differ. ORPO and SimPO are not measured here: their TRL trainers ask the model for full
logits, (batch, length, 151936) in fp32, which the packed path returns in the same layout.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from rlhf.dev.bench import together
from rlhf.dev.bench.settings import settings_lines
from rlhf.dev.bench.together import counted, ratio_text
from rlhf.methods import dpo, kto, reward
from rlhf.methods.base import UNPAIRED

MODEL = {"hidden": 128, "layers": 2, "heads": 4, "intermediate": 256, "vocab_size": 151936}
MAX_LENGTH = 2048
PROMPT_MEDIAN, ANSWER_MEDIAN, SIGMA = 120, 220, 0.9
# The chat template's tokens around a prompt and an answer, kept inside MAX_LENGTH.
TEMPLATE_ROOM = 24
# The methods measured, by their specs: DPO, KTO, the reward model.
METHODS = (dpo.SPEC, kto.SPEC, reward.SPEC)
BATCH = 2  # pairs (or unpaired rows, KTO: 4) per micro-batch
THREADS = 1


def lengths(rng: random.Random, median: int) -> int:
    """One long-tailed length: lognormal around `median`, at least 1."""
    return max(1, round(math.exp(rng.gauss(math.log(median), SIGMA))))


def words(rng: random.Random, vocabulary: list[str], n: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(n))


def build_rows(path: Path, rows: int, seed: int = 0) -> dict[str, Any]:
    """`rows` preference pairs (chatml.intel) and the unpaired rows made of them (KTO), written
    beside `path`; returns the lengths' summary."""
    from rlhf.assets.build_tiny import vocabulary_words

    rng = random.Random(seed)
    vocabulary = [w for w in vocabulary_words() if w.isalpha()]
    pairs, unpaired, totals = [], [], []
    room = MAX_LENGTH - TEMPLATE_ROOM
    for i in range(rows):
        prompt = min(lengths(rng, PROMPT_MEDIAN), room // 2)
        answers = [min(lengths(rng, ANSWER_MEDIAN), room - prompt) for _ in range(2)]
        texts = [words(rng, vocabulary, n) for n in (prompt, *answers)]
        pairs.append({"question": texts[0], "chosen": texts[1], "rejected": texts[2]})
        unpaired += [{"question": texts[0], "completion": texts[1], "label": True},
                     {"question": texts[0], "completion": texts[2], "label": False}]
        totals += [prompt + n for n in answers]
    (path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (path / "unpaired.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unpaired))
    ordered = sorted(totals)
    return {"rows": rows, "sequence_tokens": {"median": statistics.median(ordered),
                                              "p90": ordered[int(0.9 * (len(ordered) - 1))],
                                              "max": ordered[-1], "min": ordered[0]},
            "prompt_median": PROMPT_MEDIAN, "answer_median": ANSWER_MEDIAN, "sigma": SIGMA}


def platform_command(spec: Any, model_dir: Path, data: Path, steps: int, run_dir: Path, cache: Path) -> list[str]:
    """The platform as a user runs it on this data (`spec`: the method's MethodSpec): padding-free
    is its default."""
    unpaired = spec.shape == UNPAIRED
    rows = data / ("unpaired.jsonl" if unpaired else "pairs.jsonl")
    batch = 2 * BATCH if unpaired else BATCH
    return [sys.executable, "-m", "rlhf.train", f"method={spec.kind}", f"model.name_or_path={model_dir}",
            f"dataset.path={rows}", "dataset.type=chatml.intel", "dataset.eval=[]", "dataset.shuffle=false",
            f"method.max_length={MAX_LENGTH}", f"method.micro_batch_size={batch}", "method.gradient_accumulation_steps=1",
            f"method.max_steps={steps}", "method.logging_steps=1", "method.save_steps=100000", "method.learning_rate=1e-5",
            *(["method.precompute_ref_log_probs=true"] if spec.reference_arg is not None else []),
            "evaluate.enabled=false", "seed=42", f"hardware.torch_threads={THREADS}",
            f"hydra.run.dir={run_dir}", f"cache_dir={cache}"]


def plain_command(spec: Any, model_dir: Path, data: Path, steps: int, out: Path) -> list[str]:
    """The plain TRL script of `spec`'s trainer, keyed by TRL's class name."""
    return [sys.executable, "-m", "rlhf.dev.bench.plain_trl_lengths", spec.trl_trainer.rpartition(":")[2],
            str(model_dir), str(data), str(out), str(steps), str(THREADS), str(BATCH), str(MAX_LENGTH)]


def alone(commands: list[list[str]], work: Path, index: int, core: int,
          envs: list[dict[str, str] | None]) -> list[dict]:
    """One repeat: each command by itself on `core`, one after the other, the first of them
    alternating between repeats. Not together: a step here takes 10-80 s depending on its batch,
    and the two sides reach their first step minutes apart, so run together one side's steps
    meet the other's set-up and the other's meet an idle machine."""
    order = [0, 1] if index % 2 == 0 else [1, 0]
    out: dict[int, dict] = {}
    for side in order:
        out[side] = together.run_together([commands[side]], work, [core], [envs[side]])[0]
    return [out[0], out[1]]


def step_seconds(stamps: list[float]) -> list[float]:
    """Each optimizer step's seconds after the first (the first carries the trainer's start)."""
    return [b - a for a, b in itertools.pairwise(stamps)]


# Per-step losses further apart than this mean the sides did not train the same batches alike:
# padding-free kept them within 2.3e-5 relative over the bench's 8 steps, while DPO's losses of
# different batches differed by 2e-3 to 1e-2 from the third step of a sample run on. The first
# two steps cannot tell: DPO's first loss is ln 2 for any batch, and the first update's learning
# rate is 0 under warmup.
SAME_LOSSES = 1e-3


def loss_difference(platform: list[float], plain: list[float]) -> float:
    """The largest relative difference between the two sides' per-step losses. Raises when the
    sides logged different numbers of steps, or when it exceeds SAME_LOSSES: a step-against-step
    comparison of sides that trained different batches would compare nothing."""
    if len(platform) != len(plain):
        raise RuntimeError(f"the platform logged {len(platform)} losses, plain TRL {len(plain)}")
    worst = max(abs(p - t) / max(abs(t), 1e-12) for p, t in zip(platform, plain, strict=True))
    if worst > SAME_LOSSES:
        raise RuntimeError(f"the platform's per-step losses {platform} differ from plain TRL's {plain} by up to "
                           f"{worst:.1e} relative (limit {SAME_LOSSES}): the two sides did not train the same batches "
                           "with the same settings, so their steps cannot be compared one against the other")
    return worst


def compare_repeat(platform_run: dict, plain_run: dict, real_tokens: list[int]) -> dict:
    """One repeat's figures, step against step: the same step index trained the same batch on both
    sides. `real_tokens`: each batch's real tokens, from TRL's collator."""
    p, t = step_seconds(platform_run["stamps"]), step_seconds(plain_run["stamps"])
    if len(p) != len(t):
        raise RuntimeError(f"the platform timed {len(p) + 1} steps, plain TRL {len(t) + 1}")
    tokens = sum(real_tokens[1:len(p) + 1])  # the timed steps' batches
    return {"platform_step_s": statistics.median(p), "plain_step_s": statistics.median(t),
            "median_ratio": statistics.median(p) / statistics.median(t), "total_ratio": sum(p) / sum(t),
            "step_ratios": [a / b for a, b in zip(p, t)],
            "platform_tokens_per_s": tokens / sum(p), "plain_tokens_per_s": tokens / sum(t)}


def bench_method(spec: Any, work: Path, model_dir: Path, data: Path, steps: int, repeats: int, core: int) -> dict:
    """One method's repeats, each side alone on `core`; figures step against step."""
    from rlhf.dev.bench.settings import compared, run_settings

    method = spec.kind
    repeats_out, platform_runs, plain_runs, shares, differences = [], [], [], [], []
    settings = ""  # both sides' settings, read back from the first repeat
    for index in range(repeats):
        run_dir, plain = work / f"platform-{method}-{index}", work / f"plain-{method}-{index}"
        commands = [platform_command(spec, model_dir, data, steps, run_dir, work / f"cache-{method}-{index}"),
                    plain_command(spec, model_dir, data, steps, plain)]
        envs = [None, {"HF_DATASETS_CACHE": str(work / f"hf-{method}-{index}")}]
        platform_side, plain_side = alone(commands, work, index, core, envs)
        platform_runs.append({**platform_side, **together.platform_stamps(run_dir)})
        plain_runs.append({**plain_side, **together.plain_stamps(plain)})
        times = json.loads((plain / "times.json").read_text())
        shares.append(times["padding_share"])
        settings = settings or compared(run_settings(run_dir), times["settings"])
        differences.append(loss_difference(platform_runs[-1]["losses"], times["losses"]))
        repeats_out.append(compare_repeat(platform_runs[-1], plain_runs[-1], times["real_tokens"]))
    return {
        "platform_step_s": statistics.median(r["platform_step_s"] for r in repeats_out),
        "plain_step_s": statistics.median(r["plain_step_s"] for r in repeats_out),
        "ratio": together.ratios([r["median_ratio"] for r in repeats_out]),
        "total_ratio": together.ratios([r["total_ratio"] for r in repeats_out]),
        "platform_tokens_per_s": statistics.median(r["platform_tokens_per_s"] for r in repeats_out),
        "plain_tokens_per_s": statistics.median(r["plain_tokens_per_s"] for r in repeats_out),
        "platform_peak_rss_mib": max(r["rss"] for r in platform_runs),
        "plain_peak_rss_mib": max(r["rss"] for r in plain_runs),
        "trl_padding_share": statistics.median(shares), "loss_difference": max(differences),
        "platform_layout": json.loads((work / f"platform-{method}-0" / "metrics.json").read_text())["batches"],
        "settings": settings,
        "repeats": repeats_out,
    }


def bench(work: Path, steps: int, repeats: int, rows: int) -> dict:
    """Each method's repeats: the platform and plain TRL one after the other on one core."""
    import os

    from rlhf.assets.build_tiny import build

    model_dir, data = work / "model", work / "data"
    data.mkdir(exist_ok=True)
    build(model_dir, **MODEL, max_positions=MAX_LENGTH)
    out: dict[str, Any] = {"model": {**MODEL, "parameters": together.parameters(model_dir)}, "max_length": MAX_LENGTH,
                           "data": build_rows(data, rows), "steps": steps, "repeats": repeats, "batch": BATCH,
                           "threads": THREADS, "methods": {}}
    core = max(os.sched_getaffinity(0))
    for spec in METHODS:
        out["methods"][spec.kind] = bench_method(spec, work, model_dir, data, steps, repeats, core)
        print(f"{spec.kind}: {out['methods'][spec.kind]}", file=sys.stderr)
    return out


def render(figures: dict) -> list[str]:
    """The section's paragraph and table (BENCHMARKS.md)."""
    model, data = figures["model"], figures["data"]
    seq = data["sequence_tokens"]
    lines = [f"A model built like the tiny one with Qwen2.5's vocabulary size ({model['vocab_size']} output rows, hidden "
             f"{model['hidden']}, {model['layers']} layers, {model['parameters'] / 1e6:.0f}M parameters, fp32) on "
             f"{data['rows']} preference rows of long-tailed lengths (lognormal, prompt median {data['prompt_median']}, "
             f"answer median {data['answer_median']} tokens, sigma {data['sigma']}; prompt + answer: median "
             f"{seq['median']:.0f}, 90th percentile {seq['p90']}, longest {seq['max']} tokens; max_length "
             f"{figures['max_length']}). These lengths are parameters chosen to have a public preference set's shape, "
             "not measured from one. The platform (padding-free, its default) and a plain TRL script (fp32, the "
             "reference log-probs precomputed, the same batch, one torch thread) train the same rows in the same "
             "order, each alone on the same core, one after the other, which goes first alternating; "
             f"{counted(figures['repeats'], 'repeat')} of {counted(figures['steps'], 'step')}, micro-batch "
             f"{figures['batch']} pairs (KTO: {2 * figures['batch']} rows). A step takes seconds to a minute by its "
             "batch's lengths, so the sides are compared step against step: the steps after the first, the same "
             "index on both sides being the same batch. Step ratio: the platform's median step time over TRL's, "
             "per repeat, the median over repeats [lowest, highest]; total ratio: the same for the sum of those "
             "steps. Tokens per second: those steps' real (not padding) tokens over their time. Padding: the share "
             "of TRL's batch positions that are padding, from its collator. Loss difference: the largest relative "
             "difference between the two sides' per-step losses, which shows both trained the same batches alike.",
             "", "| method | median step ms (platform / TRL) | step ratio | total ratio | tokens/s (platform / TRL) "
             "| TRL padding share | peak MiB (platform / TRL) | loss difference |", "|---|---|---|---|---|---|---|---|"]
    for method, r in figures["methods"].items():
        lines.append(f"| {method} | {1000 * r['platform_step_s']:.0f} / {1000 * r['plain_step_s']:.0f} | {ratio_text(r['ratio'])} "
                     f"| {ratio_text(r['total_ratio'])} | {r['platform_tokens_per_s']:.0f} / "
                     f"{r['plain_tokens_per_s']:.0f} | {r['trl_padding_share']:.0%} | {r['platform_peak_rss_mib']:.0f} / "
                     f"{r['plain_peak_rss_mib']:.0f} | {r['loss_difference']:.1e} |")
    settings = [(method, r["settings"]) for method, r in figures["methods"].items()]
    return lines + ["", *settings_lines(settings, "Settings, read back from each side's first run"), "",
                    "ORPO and SimPO are not in this table: their TRL trainers ask the model for full logits, "
                    "(batch, length, vocabulary) in fp32, which the packed path hands back in that layout; their "
                    "padding-free parity is tested (tests/test_padding_free.py), their speed on this shape is not "
                    "measured."]
