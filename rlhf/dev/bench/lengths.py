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
thread) train the same rows at the same moment, each pinned to its own core, the cores swapping
(rlhf.dev.bench.together.run_together). Measured: the median step time over the steps both
made together, real tokens per second, the peak RSS, and the padding share of TRL's batches (from its collator).
ORPO and SimPO are not measured here: their TRL trainers ask the model for full logits,
(batch, length, 151936) in fp32, which the packed path returns in the same layout.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from rlhf.dev.bench import together
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


def bench(work: Path, steps: int, repeats: int, rows: int) -> dict:
    """Each method's repeats, the platform and plain TRL together on two rotating cores."""
    import os

    from rlhf.assets.build_tiny import build

    model_dir, data = work / "model", work / "data"
    data.mkdir(exist_ok=True)
    build(model_dir, **MODEL, max_positions=MAX_LENGTH)
    out: dict[str, Any] = {"model": {**MODEL, "parameters": together.parameters(model_dir)}, "max_length": MAX_LENGTH,
                           "data": build_rows(data, rows), "steps": steps, "repeats": repeats, "batch": BATCH,
                           "threads": THREADS, "methods": {}}
    cores = sorted(os.sched_getaffinity(0))
    for spec in METHODS:
        method = spec.kind
        platform_runs, plain_runs, layouts, shares, tokens = [], [], [], [], []
        for index in range(repeats):
            run_dir, plain = work / f"platform-{method}-{index}", work / f"plain-{method}-{index}"
            commands = [platform_command(spec, model_dir, data, steps, run_dir, work / f"cache-{method}-{index}"),
                        plain_command(spec, model_dir, data, steps, plain)]
            envs = [None, {"HF_DATASETS_CACHE": str(work / f"hf-{method}-{index}")}]
            platform_side, plain_side = together.pair(commands, work, index, cores, envs)
            platform_runs.append({**platform_side, **together.platform_stamps(run_dir)})
            plain_runs.append({**plain_side, **together.plain_stamps(plain)})
            layouts.append(json.loads((run_dir / "metrics.json").read_text())["batches"])
            times = json.loads((plain / "times.json").read_text())
            shares.append(times["padding_share"])
            tokens.append(times["real_tokens_per_step"])
        platform, trl = together.summarise(platform_runs), together.summarise(plain_runs)
        per_step = statistics.median(tokens)
        out["methods"][method] = {
            "platform": {**platform, "tokens_per_s": per_step / platform["median_step_ms"] * 1000},
            "plain": {**trl, "tokens_per_s": per_step / trl["median_step_ms"] * 1000},
            "ratio": together.paired_ratios(platform_runs, plain_runs),
            "trl_padding_share": statistics.median(shares), "real_tokens_per_step": per_step,
            "platform_layout": layouts[0],
        }
        print(f"{method}: {out['methods'][method]}", file=sys.stderr)
    return out


def render(figures: dict) -> list[str]:

    model, data = figures["model"], figures["data"]
    seq = data["sequence_tokens"]
    lines = [f"A model built like the tiny one with Qwen2.5's vocabulary size ({model['vocab_size']} output rows, hidden "
             f"{model['hidden']}, {model['layers']} layers, {model['parameters'] / 1e6:.0f}M parameters, fp32) on "
             f"{data['rows']} preference rows of long-tailed lengths (lognormal, prompt median {data['prompt_median']}, "
             f"answer median {data['answer_median']} tokens, sigma {data['sigma']}; prompt + answer: median "
             f"{seq['median']:.0f}, 90th percentile {seq['p90']}, longest {seq['max']} tokens; max_length "
             f"{figures['max_length']}). These lengths are parameters chosen to have a public preference set's shape, "
             "not measured from one. The platform (padding-free, its default) and a plain TRL script (fp32, the "
             "reference log-probs precomputed, the same batch, one torch thread each) train at the same moment, each "
             f"on one of two cores, the cores swapping; {counted(figures['repeats'], 'repeat')} of "
             f"{counted(figures['steps'], 'step')}, micro-batch {figures['batch']} pairs (KTO: {2 * figures['batch']} "
             "rows). Step ratio: platform / TRL within each pair of runs, median over pairs [lowest, highest]. Tokens "
             "per second: real (not padding) tokens of a step's rows over the median step time. Padding: the share "
             "of TRL's batch positions that are padding, from its collator.", "",
             "| method | step ms (platform / TRL) | step ratio | tokens/s (platform / TRL) | TRL padding share | "
             "peak MiB (platform / TRL) |", "|---|---|---|---|---|---|"]
    for method, r in figures["methods"].items():
        p, t = r["platform"], r["plain"]
        lines.append(f"| {method} | {p['median_step_ms']:.0f} / {t['median_step_ms']:.0f} | {ratio_text(r['ratio']['step'])} "
                     f"| {p['tokens_per_s']:.0f} / {t['tokens_per_s']:.0f} | {r['trl_padding_share']:.0%} | "
                     f"{p['peak_rss_mib']:.0f} / {t['peak_rss_mib']:.0f} |")
    return lines + ["", "ORPO and SimPO are not in this table: their TRL trainers ask the model for full logits, "
                    "(batch, length, vocabulary) in fp32, which the packed path hands back in that layout; their "
                    "padding-free parity is tested (tests/test_padding_free.py), their speed on this shape is not "
                    "measured."]
