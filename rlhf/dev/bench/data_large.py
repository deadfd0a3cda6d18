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
sides train with the same batch, torch threads and data workers (the platform's
rlhf.data.workers.processes for the run, given to TRL as `dataset_num_proc`), one step, no
reference precompute, no eval; what each side ran with is read back from it and recorded
(rlhf.dev.bench.settings). The load average before and after each run is kept with it: other
work on the machine slows a run.
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

from rlhf.assets import ASSETS
from rlhf.methods.base import PAIRS, UNPAIRED

MAX_LENGTH = 2048
BATCH = 8
TEXT_CHARS = (20, 400)  # every text's length, in characters, drawn uniformly
EMBEDDED = ASSETS / "models" / "tiny-chatml"
WORDS = ("the of and to in is was for on that with as by at from his her an be this which or are had not but what "
         "all were when we there can been one would their if will more about up out so said into them some could "
         "only other time new than these two may first then do any like my now over such our man me even most made "
         "after also did many before must through back years where much your way well down should because each "
         "just those people how too little state good very make world still own see men work long get here "
         "between both life being under never day same another know while last might us great old year off come "
         "since against go came right used take three").split()


def text(rng: random.Random) -> str:
    """Random words, cut to a length drawn from TEXT_CHARS."""
    length = rng.randint(*TEXT_CHARS)
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
    source = EMBEDDED
    out.mkdir(parents=True, exist_ok=True)
    spec = json.loads((source / "tokenizer.json").read_text())
    spec["model"]["merges"] = []
    (out / "tokenizer.json").write_text(json.dumps(spec))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, out / name)
    return out


def platform_command(method: str, data: Path, tokenizer: Path | None, run_dir: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf.train", *platform_overrides(method, data, tokenizer, cache),
            f"hydra.run.dir={run_dir}"]


def platform_overrides(method: str, data: Path, tokenizer: Path | None, cache: Path) -> list[str]:
    return [f"method={method}", f"dataset.path={data}", "dataset.type=chatml.intel", "dataset.eval=[]",
            "dataset.shuffle=false", *([f"model.tokenizer={tokenizer}"] if tokenizer else []),
            f"method.max_length={MAX_LENGTH}", "method.max_steps=1", "method.logging_steps=1",
            f"method.micro_batch_size={BATCH}", "method.gradient_accumulation_steps=1",
            "method.precompute_ref_log_probs=false", "method.save_steps=100000", "evaluate.enabled=false",
            f"cache_dir={cache}"]


def platform_resources(overrides: list[str]) -> dict[str, int]:
    """The data workers (rlhf.data.workers.processes), torch threads and precision the platform's
    run of these overrides has, decided as the run decides them: what the plain script is given."""
    from rlhf.config.validate import validate
    from rlhf.data.workers import processes
    from rlhf.launch.compose import compose_job

    run = validate(compose_job(overrides))
    return {"workers": processes(run), "threads": run.hardware.torch_threads or run.hardware.cpus_per_process,
            "precision": run.hardware.precision}


def plain_command(method: str, data: Path, tokenizer: Path, out: Path, resources: dict[str, int]) -> list[str]:
    """The plain TRL script with the platform's data workers (as dataset_num_proc), threads, batch and
    precision."""
    from rlhf.methods import lookup

    trainer = lookup(method).trl_trainer.rpartition(":")[2]
    return [sys.executable, "-m", "rlhf.dev.bench.plain_trl_data", trainer, str(data), str(tokenizer), str(MAX_LENGTH),
            str(out), str(resources["workers"]), str(resources["threads"]), str(BATCH), resources["precision"]]


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run `command` alone; its start, wall seconds and the load average around it."""
    before = os.getloadavg()[0]
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=out, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return {"start": start, "seconds": time.time() - start, "load_before": before, "load_after": os.getloadavg()[0]}


def platform_first_step(run: dict, run_dir: Path) -> dict:
    from rlhf.dev.bench.settings import run_settings

    history = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    first = next(h["time"] for h in history if "loss" in h)
    stage = re.findall(r"data cache (?:miss|hit): .* in ([0-9.]+)s", (run_dir / "train.log").read_text())
    return {**run, "first_step_s": first - run["start"], "data_stage_s": float(stage[-1]) if stage else None,
            "settings": run_settings(run_dir)}


def plain_first_step(run: dict, out: Path) -> dict:
    times = json.loads((out / "times.json").read_text())
    return {**run, "first_step_s": times["steps"][0] - run["start"], "settings": times["settings"]}


def measured_methods() -> dict:
    """The methods whose data stage makes their trainer's ids from prompt-answer rows (DPO's pairs
    and KTO's unpaired rows), by kind: the ones measured here."""
    from rlhf.methods import METHODS
    from rlhf.methods.base import PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS

    measured = (PROMPT_ANSWER_IDS, PROMPT_COMPLETION_IDS)
    return {kind: spec for kind, spec in METHODS.items() if spec.tokenized in measured}


def measure(method: str, data: Path, tokenizer: Path | None, place: Path, env: dict[str, str]) -> dict:
    """One method and tokenizer: the platform then plain TRL, cold (empty caches), then both warm."""
    cache, plain_env = place / "cache", {**env, "HF_DATASETS_CACHE": str(place / "hf-datasets")}
    resources = platform_resources(platform_overrides(method, data, tokenizer, cache))
    entry: dict = {"resources": resources}
    for attempt in ("cold", "warm"):
        run_dir, out = place / f"platform-{attempt}", place / f"plain-{attempt}"
        command = platform_command(method, data, tokenizer, run_dir, cache)
        entry[f"platform_{attempt}"] = platform_first_step(
            timed(command, place.parent, env, place.with_suffix(f".platform-{attempt}.log")), run_dir)
        entry[f"plain_{attempt}"] = plain_first_step(
            timed(plain_command(method, data, tokenizer or EMBEDDED, out, resources), place.parent, plain_env,
                  place.with_suffix(f".plain-{attempt}.log")), out)
    for attempt in ("cold", "warm"):
        entry[f"ratio_{attempt}"] = (entry[f"platform_{attempt}"]["first_step_s"]
                                     / entry[f"plain_{attempt}"]["first_step_s"])
    return entry


def bench_data_large(work: Path, rows: int, env: dict[str, str]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    files = {PAIRS: write_rows(work / "pairs.jsonl", rows, unpaired=False),
             UNPAIRED: write_rows(work / "unpaired.jsonl", rows, unpaired=True)}
    methods = measured_methods()
    # None: the embedded model's own tokenizer (no model.tokenizer override).
    tokenizers = {"byte-level": byte_tokenizer(work / "byte-tokenizer"), "embedded": None}
    results: dict = {"rows": rows, "text_chars": list(TEXT_CHARS), "max_length": MAX_LENGTH, "batch": BATCH,
                     "runs": {}}
    for method, spec in methods.items():
        for name, tokenizer in tokenizers.items():
            key = f"{method}/{name}"
            place = work / key.replace("/", "-")
            results["runs"][key] = measure(method, files[spec.shape], tokenizer, place, env)
            print(f"data_large {key}: {json.dumps(results['runs'][key])}", file=sys.stderr)
    return results


def render(result: dict) -> list[str]:
    """The section's body in BENCHMARKS.md."""
    from rlhf.dev.bench.settings import compared, settings_lines

    low, high = result["text_chars"]
    lines = [f"{result['rows']} chatml.intel rows of random words (texts of {low}-{high} characters, a system prompt "
             f"in every third row), max_length {result['max_length']}, {result['batch']} rows per step, the tiny "
             "model. Byte-level tokenizer: the embedded one with its merges removed (one token per byte). Each run "
             "alone on the machine, one after the other; cold: empty caches (the platform's data cache, TRL's "
             "datasets cache), warm: the same command again. The plain TRL script is given the platform's data "
             "workers as `dataset_num_proc` (its formatting map too), its torch threads, batch and precision. First "
             "step: from "
             "process start to the end of the first optimizer step. Ratio: platform / TRL. The platform's data "
             "stage (formatting, tokenizing, the length rule, saving or loading the cache) is the `data cache` line "
             "of its train.log. Load: the 1-minute load average before each side's cold run.", "",
             "| method | tokenizer | cold s (platform / TRL) | cold ratio | warm s (platform / TRL) | warm ratio | "
             "platform data stage s (cold / warm) | load (cold runs) |",
             "|---|---|---|---|---|---|---|---|"]
    settings = []
    for key, r in result["runs"].items():
        method, tokenizer = key.split("/")
        pc, tc, pw, tw = r["platform_cold"], r["plain_cold"], r["platform_warm"], r["plain_warm"]
        lines.append(f"| {method} | {tokenizer} | {pc['first_step_s']:.1f} / {tc['first_step_s']:.1f} | "
                     f"{r['ratio_cold']:.2f} | {pw['first_step_s']:.1f} / {tw['first_step_s']:.1f} | "
                     f"{r['ratio_warm']:.2f} | {pc['data_stage_s']:.1f} / {pw['data_stage_s']:.2f} | "
                     f"{pc['load_before']:.1f} / {tc['load_before']:.1f} |")
        settings.append((key, compared(pc["settings"], tc["settings"])))
    return lines + ["", *settings_lines(settings, "Settings of the cold runs")]

