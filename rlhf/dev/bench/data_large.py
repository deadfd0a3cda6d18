"""The data stage on a large dataset against a plain TRL script: time to the first step.

    python -m rlhf.bench --only data_large [--rows 100000]

Rows: `rows` chatml.intel preference pairs (DPO) and as many unpaired rows (KTO) of random
words, every text 20-400 characters, a third of the rows with a system prompt, written once
from a fixed seed. max_length 2048. Two tokenizers: a byte-level one (the embedded tokenizer
with its merges removed: one token per byte, ~3x the tokens of the embedded one), and the
embedded one. The model is the embedded tiny one (both tokenizers' ids fit its vocabulary).

For each method and tokenizer, four runs, each alone on the machine, one after the other:
the platform (`python -m rlhf.train`, its data cache empty) and the plain TRL script
(rlhf.dev.bench.plain_trl_data, its datasets cache empty) cold, then both again on their warm
caches. Time to first step: from process start to the end of the first optimizer step. Both
sides train with the same batch, one step, no reference precompute, no eval. The load
average before and after each run is kept with it: other work on the machine slows a run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rlhf.methods.base import PAIRS, UNPAIRED

MAX_LENGTH = 2048
BATCH = 8
WORDS = ("the of and to in is was for on that with as by at from his her an be this which or are had not but what "
         "all were when we there can been one would their if will more about up out so said into them some could "
         "only other time new than these two may first then do any like my now over such our man me even most made "
         "after also did many before must through back years where much your way well down should because each "
         "just those people how too little state good very make world still own see men work long get here "
         "between both life being under never day same another know while last might us great old year off come "
         "since against go came right used take three").split()


def text(rng: random.Random, low: int = 20, high: int = 400) -> str:
    """Random words, cut to a length drawn from low..high characters."""
    length = rng.randint(low, high)
    words: list[str] = []
    while sum(map(len, words)) + len(words) < length:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:length].strip() or "x"


def write_rows(path: Path, rows: int, unpaired: bool, seed: int = 17) -> Path:
    """chatml.intel rows: question, chosen and rejected (or completion and label), a system
    prompt in every third row."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            row = {"question": text(rng)}
            if unpaired:
                row.update(completion=text(rng), label=bool(i % 2))
            else:
                row.update(chosen=text(rng), rejected=text(rng))
            if i % 3 == 0:
                row["system"] = text(rng)
            f.write(json.dumps(row) + "\n")
    return path


def byte_tokenizer(out: Path) -> Path:
    """The embedded tokenizer without its merges: every byte one token (its vocabulary, and so
    the tiny model's embeddings, unchanged)."""
    from rlhf.assets import ASSETS

    source = ASSETS / "models" / "tiny-chatml"
    out.mkdir(parents=True, exist_ok=True)
    spec = json.loads((source / "tokenizer.json").read_text())
    spec["model"]["merges"] = []
    (out / "tokenizer.json").write_text(json.dumps(spec))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, out / name)
    return out


def platform_command(method: str, data: Path, tokenizer: Path | None, run_dir: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf.train", f"method={method}", f"dataset.path={data}",
            "dataset.type=chatml.intel", "dataset.eval=[]", "dataset.shuffle=false",
            *([f"model.tokenizer={tokenizer}"] if tokenizer else []), f"method.max_length={MAX_LENGTH}",
            "method.max_steps=1", "method.logging_steps=1", f"method.micro_batch_size={BATCH}",
            "method.gradient_accumulation_steps=1", "method.precompute_ref_log_probs=false",
            "method.save_steps=100000", "evaluate.enabled=false", f"hydra.run.dir={run_dir}", f"cache_dir={cache}"]


def plain_command(method: str, data: Path, tokenizer: Path, out: Path) -> list[str]:
    from rlhf.methods import lookup

    trainer = lookup(method).trl_trainer.rpartition(":")[2]
    return [sys.executable, "-m", "rlhf.dev.bench.plain_trl_data", trainer, str(data), str(tokenizer), str(MAX_LENGTH),
            str(out)]


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run `command` alone; its start, wall seconds and the load average around it."""
    before = os.getloadavg()[0]
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=out)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return {"start": start, "seconds": time.time() - start, "load_before": before, "load_after": os.getloadavg()[0]}


def platform_first_step(run: dict, run_dir: Path) -> dict:
    history = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    first = next(h["time"] for h in history if "loss" in h)
    stage = re.findall(r"data cache (?:miss|hit): .* in ([0-9.]+)s", (run_dir / "train.log").read_text())
    return {**run, "first_step_s": first - run["start"], "data_stage_s": float(stage[-1]) if stage else None}


def plain_first_step(run: dict, out: Path) -> dict:
    times = json.loads((out / "times.json").read_text())
    return {**run, "first_step_s": times["steps"][0] - run["start"]}


def measured_methods() -> dict:
    """The methods whose data stage makes their trainer's ids from prompt-answer rows (DPO's pairs
    and KTO's unpaired rows), by kind: the ones measured here."""
    from rlhf.methods import METHODS
    from rlhf.methods.base import PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS

    return {kind: spec for kind, spec in METHODS.items() if spec.tokenized in (PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS)}


def bench_data_large(work: Path, rows: int, env: dict[str, str]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    files = {PAIRS: write_rows(work / "pairs.jsonl", rows, unpaired=False),
             UNPAIRED: write_rows(work / "unpaired.jsonl", rows, unpaired=True)}
    methods = measured_methods()
    data = {method: files[spec.shape] for method, spec in methods.items()}
    from rlhf.assets import ASSETS

    tokenizers = {"byte-level": byte_tokenizer(work / "byte-tokenizer"),
                  "embedded": ASSETS / "models" / "tiny-chatml"}
    results: dict = {"rows": rows, "max_length": MAX_LENGTH, "batch": BATCH, "cpus": os.cpu_count(), "runs": {}}
    for method in methods:
        for name, tokenizer in tokenizers.items():
            key = f"{method}/{name}"
            place = work / key.replace("/", "-")
            cache, plain_env = place / "cache", {**env, "HF_DATASETS_CACHE": str(place / "hf-datasets")}
            entry = {}
            for attempt in ("cold", "warm"):
                run_dir = place / f"platform-{attempt}"
                command = platform_command(method, data[method], tokenizer if name != "embedded" else None, run_dir,
                                           cache)
                entry[f"platform_{attempt}"] = platform_first_step(
                    timed(command, work, env, place.with_suffix(f".platform-{attempt}.log")), run_dir)
                out = place / f"plain-{attempt}"
                entry[f"plain_{attempt}"] = plain_first_step(
                    timed(plain_command(method, data[method], tokenizer, out), work, plain_env,
                          place.with_suffix(f".plain-{attempt}.log")), out)
            for attempt in ("cold", "warm"):
                entry[f"ratio_{attempt}"] = (entry[f"platform_{attempt}"]["first_step_s"]
                                             / entry[f"plain_{attempt}"]["first_step_s"])
            results["runs"][key] = entry
            print(f"data_large {key}: {json.dumps(entry)}", file=sys.stderr)
    return results


def render(result: dict) -> list[str]:
    """The section of BENCHMARKS.md."""
    lines = [f"## Data stage on {result['rows']} rows: time to first step against a plain TRL script", "",
             f"{result['rows']} chatml.intel rows (texts of 20-400 characters), max_length {result['max_length']}, "
             f"{result['batch']} rows per step, the tiny model, {result['cpus']} cores; each run alone on the "
             "machine; cold: empty caches (the platform's data cache, TRL's datasets cache), warm: the same command "
             "again. First step: from process start to the end of the first optimizer step. Ratio: platform / TRL. "
             "The platform's data stage (formatting, tokenizing, the length rule, saving or loading the cache) is "
             "the `data cache` line of its train.log. Load: the 1-minute load average before the run.", "",
             "| method | tokenizer | cold s (platform / TRL) | cold ratio | warm s (platform / TRL) | warm ratio | "
             "platform data stage s (cold / warm) | load (cold runs) |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in result["runs"].items():
        method, tokenizer = key.split("/")
        pc, tc, pw, tw = r["platform_cold"], r["plain_cold"], r["platform_warm"], r["plain_warm"]
        lines.append(f"| {method} | {tokenizer} | {pc['first_step_s']:.1f} / {tc['first_step_s']:.1f} | "
                     f"{r['ratio_cold']:.2f} | {pw['first_step_s']:.1f} / {tw['first_step_s']:.1f} | "
                     f"{r['ratio_warm']:.2f} | {pc['data_stage_s']:.1f} / {pw['data_stage_s']:.2f} | "
                     f"{pc['load_before']:.1f} / {tc['load_before']:.1f} |")
    return lines
