"""The bench's sections: what each measures (`bench_<section>`), and how its figures read in
BENCHMARKS.md (`render_<section>`, the section's body under its TITLES heading).

- methods: the platform against a plain TRL script (rlhf.dev.bench.plain_trl) on the same model,
  data and settings: median step time, time to first step, peak memory, per method. The two
  sides run at the same moment, each pinned to its own core, the cores swapping between them;
- config: how fast the command line answers: `--cfg job`, a validation error, a bad row of a
  string-family dataset, `--help`;
- data: data preparation throughput on chatml.intel rows, cold and cached;
- data_large: the data stage on a large dataset against a plain TRL script given the same data
  workers: time to the first step, cold and warm (rlhf.dev.bench.data_large);
- sweep: a DPO beta sweep against as many independent runs, with their results compared;
- generation: the default run with its generation eval stage against the same run without it,
  and each method's embedded default judged on its generations;
- lora_memory: peak memory of LoRA DPO with the reference from the disabled adapter against a
  separate reference model, on a larger benchmark model;
- eval_memory: the end-of-run generation eval stage's own peak memory on a model of a real
  vocabulary size (152k), the stage's code before its memory work beside the current code;
- lengths: padding-free batches (DPO, KTO, the reward model) against a plain TRL script on
  long-tailed lengths and a real vocabulary size (rlhf.dev.bench.lengths).

Each runner takes its work dir and its sizes (DEFAULTS, which the command line may shrink) and
returns the section's figures, the sizes included: a renderer reads nothing but them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rlhf.config.tree import REPO
from rlhf.dev.bench import data_large, halving, lengths, record
from rlhf.dev.bench.together import (
    SWAP_EVERY_S,
    counted,
    env,
    pair,
    paired_ratios,
    parameters,
    plain_stamps,
    platform_stamps,
    ratio_text,
    ratios,
    run_together,
    summarise,
)
from rlhf.dev.bench.settings import compared, run_settings, settings_lines

SECTIONS = ("methods", "config", "data", "data_large", "sweep", "halving", "generation", "lora_memory", "eval_memory",
            "lengths")
TITLES = {
    "methods": "Platform against a plain TRL script (same model, data, settings)",
    "config": "Configuration speed",
    "data": "Data preparation",
    "data_large": "Data stage on a large dataset: time to first step against a plain TRL script",
    "sweep": "A DPO beta sweep against independent runs",
    "halving": "A halving sweep against the full sweep of the same points",
    "generation": "The generation eval stage (the default run: embedded DPO)",
    "lora_memory": "LoRA DPO peak memory",
    "eval_memory": "The end-of-run generation eval stage's peak memory, on a real vocabulary size",
    "lengths": "Padding-free batches against a plain TRL script, on long-tailed lengths and a real vocabulary size",
}
# Each section's sizes at full size (make bench); `steps: None` runs the shipped defaults as shipped.
DEFAULTS: dict[str, dict[str, Any]] = {
    "methods": {"steps": 60, "repeats": 8},
    "config": {"repeats": 5},
    "data": {"rows": 100_000},
    "data_large": {"rows": 100_000},
    "sweep": {"betas": [0.05, 0.1, 0.2, 0.4], "steps": None},
    # The embedded DPO run as shipped is 204 optimizer steps (816 pairs, batch 16, 4 epochs).
    "halving": {"betas": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "seeds": [1, 2], "max_steps": 204, "min_steps": 24,
                "eta": 3},
    "generation": {"repeats": 5, "steps": None},
    "lora_memory": {"steps": 6},
    "eval_memory": {"steps": 4},
    # 16 rows at micro-batch 2: 8 steps are one epoch, each batch trained once.
    "lengths": {"steps": 8, "repeats": 2, "rows": 16},
}


# ---------------------------------------------------------------------------- methods


def platform_command(method: str, steps: int, cache: Path, run_dir: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "rlhf.train", f"method={method}", f"method.max_steps={steps}",
            "method.logging_steps=1", "method.save_steps=100000", "dataset.eval=[]", "dataset.shuffle=false",
            # Plain TRL generates nothing; the generation eval stage is measured on its own (bench_generation).
            "evaluate.enabled=false",
            f"hydra.run.dir={run_dir}", f"cache_dir={cache}", f"hardware.torch_threads={threads}"]


def plain_command(method: str, steps: int, out: Path, threads: int) -> list[str]:
    """The plain TRL script of `method`'s trainer (rlhf.dev.bench.plain_trl, keyed by TRL's class)."""
    from rlhf.methods import lookup

    trainer = lookup(method).trl_trainer.rpartition(":")[2]
    return [sys.executable, "-m", "rlhf.dev.bench.plain_trl", trainer, str(out), str(steps), str(threads)]


def benchmarked_methods() -> tuple[list[str], str]:
    """Every registered method, and the control: the method of the embedded default
    (conf/config.yaml), whose plain TRL script is also measured against itself."""
    from rlhf.launch.compose import compose_job
    from rlhf.methods import METHODS

    return list(METHODS), str(compose_job([]).method.kind)


THREADS = 1  # torch threads per side: the two sides of a pair share the two cores


def bench_method(method: str, work: Path, steps: int, repeats: int, cores: list[int]) -> dict:
    """One method's repeats. Every run starts cold: the platform with a data cache of its own,
    plain TRL with a datasets cache of its own, so neither side's first step reuses an earlier
    repeat's work."""
    platform_runs, plain_runs = [], []
    for index in range(repeats):
        run_dir, out = work / f"platform-{method}-{index}", work / f"plain-{method}-{index}"
        commands = [platform_command(method, steps, work / f"cache-{method}-{index}", run_dir, THREADS),
                    plain_command(method, steps, out, THREADS)]
        envs = [None, {"HF_DATASETS_CACHE": str(work / f"hf-datasets-{method}-{index}")}]
        platform_side, plain_side = pair(commands, work, index, cores, envs)
        platform_runs.append({**platform_side, **platform_stamps(run_dir)})
        plain_runs.append({**plain_side, **plain_stamps(out)})
    settings = {"platform": run_settings(work / f"platform-{method}-0"),
                "plain": json.loads((work / f"plain-{method}-0" / "times.json").read_text())["settings"]}
    return {"platform": summarise(platform_runs), "plain": summarise(plain_runs),
            "ratio": paired_ratios(platform_runs, plain_runs), "settings": settings}


def bench_control(control: str, work: Path, steps: int, repeats: int, cores: list[int]) -> dict:
    """Plain TRL against itself, measured as the methods are: the spread a zero overhead shows."""
    first_runs, second_runs = [], []
    for index in range(repeats):
        outs = [work / f"control-a-{index}", work / f"control-b-{index}"]
        envs = [{"HF_DATASETS_CACHE": str(out.with_name(out.name + "-hf"))} for out in outs]
        sides = pair([plain_command(control, steps, out, THREADS) for out in outs], work, index, cores, envs)
        first_runs.append({**sides[0], **plain_stamps(outs[0])})
        second_runs.append({**sides[1], **plain_stamps(outs[1])})
    return {"method": control, "ratio": paired_ratios(first_runs, second_runs)}


def bench_methods(work: Path, steps: int, repeats: int) -> dict:
    """Each repeat runs the platform and plain TRL at the same time, each with one torch thread
    and pinned to one of two cores, the cores rotating between them (run_together)."""
    cores = sorted(os.sched_getaffinity(0))
    methods, control = benchmarked_methods()
    results: dict[str, Any] = {"steps": steps, "repeats": repeats, "threads": THREADS, "methods": {}}
    for method in methods:
        results["methods"][method] = bench_method(method, work, steps, repeats, cores)
        print(f"{method}: {results['methods'][method]}", file=sys.stderr)
    results["control"] = bench_control(control, work, steps, repeats, cores)
    results["together"] = len(cores) >= 2
    results["swap_every_s"] = SWAP_EVERY_S
    return results


METHODS_NOTES = [
    "Where the platform differs from the plain script while both train alike: a CPU training process keeps "
    "freed memory for reuse (`hardware.malloc_keep_mb`, glibc `mallopt`), where plain TRL runs with the C "
    "library's defaults, which hand many of a step's large tensors back to the OS to fault in again; torch, "
    "transformers and TRL are imported with the cycle collector paused and then frozen, so full collections do "
    "not rescan their long-lived objects.",
]


def render_methods(figures: dict) -> list[str]:
    layout = (f"together, each on one of two cores, the cores swapping between the two every "
              f"{figures['swap_every_s']} s" if figures["together"] else "one after the other (one core)")
    repeats, steps = counted(figures["repeats"], "repeat"), counted(figures["steps"], "step")
    lines = ["Both sides train on the same rows in the same order (the platform with dataset.shuffle=false), "
             f"each run starting on empty caches. Layout: {layout}. In each of {repeats} the two runs ({steps} each) "
             "start at the same moment; which side starts on which core alternates between repeats. Step time: a "
             "run's median interval between optimizer steps, over the steps both runs of the pair made at the same "
             "time (wall clock, and CPU time of the process). First step: from process start to the end of the "
             "first step. Ratio: platform / TRL within each pair, then the median over pairs, with the lowest and "
             "highest pair in brackets. Times per side are medians over runs; peak RSS is the highest of the runs.",
             "",
             "| method | step ms (platform / TRL) | step ratio | step CPU ratio | first step s (platform / TRL) | "
             "first step ratio | peak MiB (platform / TRL) |", "|---|---|---|---|---|---|---|"]
    settings = []
    for method, r in figures["methods"].items():
        p, t, q = r["platform"], r["plain"], r["ratio"]
        lines.append(f"| {method} | {p['median_step_ms']:.1f} / {t['median_step_ms']:.1f} | {ratio_text(q['step'])} "
                     f"| {ratio_text(q['step_cpu'])} | {p['first_step_s']:.2f} / {t['first_step_s']:.2f} | "
                     f"{ratio_text(q['first_step'])} | {p['peak_rss_mib']:.0f} / {t['peak_rss_mib']:.0f} |")
        settings.append((method, compared(r["settings"]["platform"], r["settings"]["plain"])))
    control, spread = figures["control"], figures["control"]["ratio"]
    return [*lines, "", *settings_lines(settings, "Settings, read back from each side's first run"), "",
            f"Control, plain TRL ({control['method']}) against itself, measured the same way: step ratio "
            f"{ratio_text(spread['step'])}, step CPU ratio {ratio_text(spread['step_cpu'])}, first step ratio "
            f"{ratio_text(spread['first_step'])}. A ratio of the table inside this spread is an overhead this "
            "machine cannot tell from none.", "", *METHODS_NOTES]


# ---------------------------------------------------------------------------- config


def bench_config(work: Path, repeats: int) -> dict:
    """Seconds until the command line answers: printing a config, a config error, a bad row of a
    string-family dataset (found before any job starts, without torch), --help."""
    missing = work / "row_missing_field.jsonl"
    missing.write_text(json.dumps({"question": "q", "chosen": "a"}) + "\n")
    bad_json = work / "row_bad_json.jsonl"
    bad_json.write_text(json.dumps({"question": "q", "chosen": "a", "rejected": "b"}) + '\n{"question": \n')
    rows = ["dataset.type=chatml.intel", "dataset.eval=[]", f"cache_dir={work / 'row_cache'}"]
    out: dict[str, Any] = {"repeats": repeats, "commands": {}}
    for name, args, code in (("cfg_job", ["--cfg", "job"], 0), ("validation_error", ["method.beta=-1"], 2),
                             ("row_error_missing_field", [f"dataset.path={missing}", *rows], 2),
                             ("row_error_bad_json", [f"dataset.path={bad_json}", *rows], 2),
                             ("help", ["--help"], 0)):
        times = []
        for _ in range(repeats):
            start = time.time()
            proc = subprocess.run([sys.executable, "-m", "rlhf.train", *args], cwd=work, env=env(), capture_output=True,
                                  text=True, check=False)
            times.append(time.time() - start)
            if proc.returncode != code:
                raise RuntimeError(f"rlhf.train {' '.join(args)} exited {proc.returncode}, not {code}:\n"
                                   f"{proc.stderr[-3000:]}")
        out["commands"][name] = {"median_s": statistics.median(times), "max_s": max(times)}
    return out


def render_config(figures: dict) -> list[str]:
    lines = [f"Wall time of `python -m rlhf.train` until it answers, {counted(figures['repeats'], 'run')} each. "
             "`row_error_missing_field` / `row_error_bad_json`: a string-family dataset row with a missing field, "
             "and a bad JSON line, refused by the launching process before torch or TRL is imported.", "",
             "| command | median s | max s |", "|---|---|---|"]
    return lines + [f"| {name} | {r['median_s']:.3f} | {r['max_s']:.3f} |" for name, r in figures["commands"].items()]


# ---------------------------------------------------------------------------- data


DATA_CODE = """
import json, sys, time
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.data.cache import prepare_data
from rlhf.data.workers import processes
from rlhf.models.loading import load_tokenizer
run = validate(compose_job(sys.argv[1:]))
tokenizer = load_tokenizer(run.model)
out = {"workers": processes(run)}
for attempt in ("cold", "cached"):
    start = time.perf_counter()
    prepared = prepare_data(run, tokenizer)
    out[attempt] = {"seconds": time.perf_counter() - start, "cache": prepared.cache, "rows": len(prepared.train)}
print(json.dumps(out))
"""


def bench_data(work: Path, rows: int) -> dict:
    """The data stage alone (prepare_data, in one process), cold then from its cache."""
    data = work / "big.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            row = {"question": f"Question number {i}: name a fruit?", "chosen": f"mango {i}", "rejected": f"tiger {i}"}
            if i % 3 == 0:
                row["system"] = "Answer in a few words."
            f.write(json.dumps(row) + "\n")
    overrides = [f"cache_dir={work / 'data_cache'}", f"dataset.path={data}", "dataset.type=chatml.intel",
                 "dataset.eval=[]"]
    proc = subprocess.run([sys.executable, "-c", DATA_CODE, *overrides], cwd=work, env=env(), capture_output=True,
                          text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for attempt in ("cold", "cached"):
        result[attempt]["rows_per_s"] = rows / result[attempt]["seconds"]
    result["speedup"] = result["cold"]["seconds"] / result["cached"]["seconds"]
    return {"rows": rows, **result}


def render_data(figures: dict) -> list[str]:
    workers = figures["workers"]
    return [f"{figures['rows']} rows of chatml.intel (short texts, a system prompt in every third row), the embedded "
            f"tokenizer, prepared by the data stage alone ({workers} worker process{'es' if workers != 1 else ''}): "
            "cold (empty cache: formatting, tokenizing, the length rule, saving), then again from the cache.", "",
            "| pass | seconds | rows/s |", "|---|---|---|",
            f"| cold | {figures['cold']['seconds']:.2f} | {figures['cold']['rows_per_s']:.0f} |",
            f"| cached | {figures['cached']['seconds']:.3f} | {figures['cached']['rows_per_s']:.0f} |",
            "", f"Cached is {figures['speedup']:.0f}x faster than cold."]


# ---------------------------------------------------------------------------- data_large


def bench_data_large(work: Path, rows: int) -> dict:
    return data_large.bench_data_large(work, rows, env())


def render_data_large(figures: dict) -> list[str]:
    return data_large.render(figures)


# ---------------------------------------------------------------------------- sweep


def bench_sweep(work: Path, betas: list[float], steps: int | None) -> dict:
    """One sweep command against as many independent commands (each its own cache), one after
    the other, the default run otherwise (`steps`: a cap on its steps, None as shipped)."""
    cap = [f"method.max_steps={steps}"] if steps else []
    start = time.time()
    subprocess.run([sys.executable, "-m", "rlhf.train", "-m", f"method.beta={','.join(map(str, betas))}", *cap,
                    f"hydra.sweep.dir={work / 'sweep'}", f"cache_dir={work / 'sweep_cache'}"], cwd=work, env=env(),
                   capture_output=True, check=True)
    sweep_seconds = time.time() - start
    start = time.time()
    for i, beta in enumerate(betas):
        subprocess.run([sys.executable, "-m", "rlhf.train", f"method.beta={beta}", *cap,
                        f"hydra.run.dir={work / f'ind{i}'}", f"cache_dir={work / f'ind_cache{i}'}"], cwd=work,
                       env=env(), capture_output=True, check=True)
    independent_seconds = time.time() - start
    return {"betas": betas, "steps": steps, "sweep_s": sweep_seconds, "independent_s": independent_seconds,
            "ratio": sweep_seconds / independent_seconds, "identical_results": same_results(work, len(betas))}


def same_results(work: Path, jobs: int) -> bool:
    """Whether each sweep job's eval metrics equal its independent run's (timings left out)."""
    from rlhf.run.rundir import job_dirs

    identical = True
    for i, job in enumerate(job_dirs(work / "sweep")):
        a = json.loads((job / "metrics.json").read_text())["eval"]
        b = json.loads((work / f"ind{i}" / "metrics.json").read_text())["eval"]
        keys = [k for k in a if k.startswith("eval_") and "runtime" not in k and "per_second" not in k]
        identical &= all(a[k] == b[k] for k in keys)
    return identical and len(job_dirs(work / "sweep")) == jobs


def shipped(steps: int | None) -> str:
    return f"capped at {counted(steps, 'step')}" if steps else "as shipped"


def render_sweep(figures: dict) -> list[str]:
    jobs = len(figures["betas"])
    return [f"The default run ({shipped(figures['steps'])}) over method.beta in "
            f"{', '.join(map(str, figures['betas']))}: one `-m method.beta=...` command of {jobs} jobs against "
            f"{jobs} separate commands, each with its own cache, one after the other.", "",
            f"Sweep: {figures['sweep_s']:.1f} s; separate commands: {figures['independent_s']:.1f} s; ratio "
            f"{figures['ratio']:.2f}. Identical eval metrics per beta: {figures['identical_results']}."]


def bench_halving(work: Path, **params: Any) -> dict:
    """Section `halving` (rlhf.dev.bench.halving), its commands in the bench's environment."""
    return halving.bench(work, env(), **params)


# ---------------------------------------------------------------------------- generation


def bench_generation(work: Path, repeats: int, steps: int | None) -> dict:
    """The default run (embedded DPO, whose generation eval stage is on) against the same run
    with the stage off (evaluate.enabled=false): the wall time of the whole command, the two
    run together on rotating cores as in bench_methods, each with a cache of its own (so the
    stage also generates the reference's completions: a single run's worst case)."""
    cores = sorted(os.sched_getaffinity(0))
    cap = [f"method.max_steps={steps}"] if steps else []
    on, off, stage, figures = [], [], [], []
    for index in range(repeats):
        dirs = [work / f"generation-on-{index}", work / f"generation-off-{index}"]
        commands = [[sys.executable, "-m", "rlhf.train", f"hydra.run.dir={d}", f"cache_dir={d}-cache",
                     f"hardware.torch_threads={THREADS}", *cap, *extra]
                    for d, extra in zip(dirs, ([], ["evaluate.enabled=false"]))]
        with_stage, without = pair(commands, work, index, cores)
        on.append(with_stage["seconds"])
        off.append(without["seconds"])
        block = json.loads((dirs[0] / "metrics.json").read_text())["generation"]
        stage.append(block["seconds"])
        figures.append(block["metrics"])
    keys = ("topic_reward", "reference/topic_reward", "win_rate", "kl", "length")
    return {"repeats": repeats, "steps": steps, "threads": THREADS, "on_s": statistics.median(on),
            "off_s": statistics.median(off), "ratio": ratios([a / b for a, b in zip(on, off)]),
            "stage_s": statistics.median(stage), "figures": {k: statistics.median(f[k] for f in figures) for k in keys},
            "methods": generation_per_method(work, steps)}


def generation_per_method(work: Path, steps: int | None) -> dict:
    """Each method's embedded default (`python -m rlhf.train method=<m>`), as shipped unless
    `steps` caps it: what its trained policy generates against the untrained model, by the
    stage's figures."""
    from rlhf.methods import METHODS as REGISTERED

    cap = [f"method.max_steps={steps}"] if steps else []
    out = {}
    for method in sorted(REGISTERED):
        run_dir = work / f"generation-{method}"
        subprocess.run([sys.executable, "-m", "rlhf.train", f"method={method}", *cap, f"hydra.run.dir={run_dir}",
                        f"cache_dir={work / 'generation-cache'}"], cwd=work, env=env(), capture_output=True,
                       check=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        block = metrics.get("generation")
        if block is None:  # a method whose model does not generate (a reward model)
            continue
        out[method] = {"metrics": block["metrics"], "intervals": block["intervals"], "prompts": block["prompts"],
                       "interval_method": block["interval_method"], "seconds": metrics["seconds"]}
    return out


def render_generation(figures: dict) -> list[str]:
    g = figures["figures"]
    lines = [f"Wall time of `python -m rlhf.train` ({shipped(figures['steps'])}) with the stage against "
             f"`evaluate.enabled=false`, the two run together on rotating cores, "
             f"{counted(figures['threads'], 'torch thread')} each, {counted(figures['repeats'], 'repeat')}, each side "
             "with a fresh cache (so the stage also generates the reference's completions):", "",
             "| with the stage s | without s | ratio (median [min, max] over pairs) | the stage's own s |",
             "|---|---|---|---|",
             f"| {figures['on_s']:.2f} | {figures['off_s']:.2f} | {ratio_text(figures['ratio'])} | "
             f"{figures['stage_s']:.2f} |",
             "", f"What it measured (medians over the repeats): topic_reward {g['topic_reward']:.3f} against the "
             f"untrained model's {g['reference/topic_reward']:.3f}, win rate {g['win_rate']:.3f}, KL "
             f"{g['kl']:.2f} nats, {g['length']:.1f} tokens per completion."]
    return lines + ["", *render_generation_methods(figures["methods"], figures["steps"])]


def render_generation_methods(methods: dict, steps: int | None) -> list[str]:
    if not methods:
        return []
    first = next(iter(methods.values()))
    prompts = first["prompts"]["source"].split(" (")[0].rsplit("/", 1)[-1]  # the file's name, not where it was
    lines = [f"Each method's embedded default ({shipped(steps)}; `python -m rlhf.train method=<m>`, one run each): "
             f"its trained policy's answers to the {first['prompts']['count']} held-out prompts of `{prompts}` "
             f"against the untrained model's; {first['interval_method']}.", "",
             "| method | topic_reward trained | untrained | win rate vs untrained | KL nats | tokens | run s |",
             "|---|---|---|---|---|---|---|"]

    def interval(figures: dict, name: str) -> str:
        i = figures["intervals"][name]
        return f"{figures['metrics'][name]:.3f} [{i['ci_low']:.3f}, {i['ci_high']:.3f}]"

    for method, figures in methods.items():
        m = figures["metrics"]
        lines.append(f"| {method} | {interval(figures, 'topic_reward')} | {interval(figures, 'reference/topic_reward')}"
                     f" | {interval(figures, 'win_rate')} | {m['kl']:.2f} | {m['length']:.1f} | "
                     f"{figures['seconds']:.0f} |")
    return lines


# ---------------------------------------------------------------------------- lora_memory

LORA_MODEL = {"hidden": 1024, "layers": 16, "heads": 16, "intermediate": 4096}
LORA_BATCH = 8


def bench_lora_memory(work: Path, steps: int) -> dict:
    from rlhf.assets.build_tiny import build

    model_dir = work / "bench-model"
    if not (model_dir / "model.safetensors").is_file():
        build(model_dir, **LORA_MODEL)
    out: dict[str, Any] = {"model": {**LORA_MODEL, "parameters": parameters(model_dir),
                                     "dtype": json.loads((model_dir / "config.json").read_text())["dtype"]},
                           "steps": steps, "batch": LORA_BATCH, "variants": {}}
    variants = {
        "lora_adapter_disabled": ["peft=lora"],
        "lora_separate_reference": ["peft=lora", "peft.rl_adapter_ref_model=true"],
        "full_separate_reference": [],
    }
    for name, extra in variants.items():
        run_dir = work / f"mem-{name}"
        # The model is the tiny one's family and tokenizer: the tiny tuning applies (named, as a
        # checkpoint other than the option's own leaves it otherwise).
        command = [sys.executable, "-m", "rlhf.train", f"model.name_or_path={model_dir}", "tuning=tiny_dpo",
                   "method.precompute_ref_log_probs=false", f"method.max_steps={steps}",
                   f"method.micro_batch_size={LORA_BATCH}", "dataset.eval=[]", "method.save_steps=100000",
                   # Training's memory: the generation eval stage would add minutes of generating, not memory.
                   "evaluate.enabled=false",
                   f"hydra.run.dir={run_dir}", f"cache_dir={work / 'cache'}", *extra]
        measured = run_together([command], work, None)[0]
        out["variants"][name] = {"peak_rss_mib": measured["rss"], "seconds": measured["seconds"]}
    rss = {name: v["peak_rss_mib"] for name, v in out["variants"].items()}
    out["ratio_vs_lora_separate"] = rss["lora_adapter_disabled"] / rss["lora_separate_reference"]
    out["ratio_vs_full_separate"] = rss["lora_adapter_disabled"] / rss["full_separate_reference"]
    return out


def render_lora_memory(figures: dict) -> list[str]:
    model = figures["model"]
    lines = [f"Embedded DPO on a benchmark model built like the tiny one (hidden {model['hidden']}, {model['layers']} "
             f"layers, {model['parameters'] / 1e6:.0f}M parameters, {model['dtype']}), "
             f"{counted(figures['steps'], 'step')} of batch {figures['batch']}, the generation eval stage off, each "
             "variant alone; peak RSS of the training process.", "",
             "| variant | peak RSS MiB | run s |", "|---|---|---|"]
    for name, variant in figures["variants"].items():
        lines.append(f"| {name} | {variant['peak_rss_mib']:.0f} | {variant['seconds']:.0f} |")
    return lines + ["", f"Adapter-disabled reference / separate reference (LoRA): "
                    f"{figures['ratio_vs_lora_separate']:.2f}; / full DPO with a separate reference: "
                    f"{figures['ratio_vs_full_separate']:.2f}."]


# A model of Qwen2.5's vocabulary size (151936 output rows) and a small body: what the stage holds
# per token is the vocabulary's, as on a real model, and the body's weights stay small beside it.
EVAL_MODEL = {"hidden": 256, "layers": 2, "heads": 4, "intermediate": 512, "vocab_size": 151936}
# The stage's code before its memory work (issue 25: the stage measured, nothing changed yet): the
# section measures it beside the current code, each in its own checkout of the repository.
EVAL_MEMORY_BEFORE = "e401b093fe716027d3091222a873101679bbcafd"


def bench_eval_memory(work: Path, steps: int) -> dict:
    """The default run (embedded DPO, its generation eval stage as shipped) on EVAL_MODEL: the
    stage's own peak (metrics.json generation.memory), with the code of EVAL_MEMORY_BEFORE (a git
    worktree of that commit) and with the current code."""
    from rlhf.assets.build_tiny import build

    model_dir = work / "bench-model"
    build(model_dir, **EVAL_MODEL)
    out: dict[str, Any] = {"model": {**EVAL_MODEL, "parameters": parameters(model_dir)}, "steps": steps, "code": {}}
    codes = {"current": (REPO, record.git_state().get("commit"))}
    if EVAL_MEMORY_BEFORE is not None:
        before = work / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), EVAL_MEMORY_BEFORE],
                       check=True, capture_output=True)
        codes = {"before": (before, EVAL_MEMORY_BEFORE), **codes}
    try:
        for name, (code, commit) in codes.items():
            run_dir = work / f"run-{name}"
            command = [sys.executable, "-m", "rlhf.train", f"model.name_or_path={model_dir}", "tuning=tiny_dpo",
                       # Training is not measured: a few steps on 64 rows, no eval set (the stage's
                       # prompts are the embedded evaluate prompts, as shipped).
                       f"method.max_steps={steps}", "method.micro_batch_size=2", "method.eval_batch_size=2",
                       "dataset.num_rows=64", "dataset.eval=[]",
                       f"hydra.run.dir={run_dir}", f"cache_dir={work / f'cache-{name}'}"]
            measured = run_together([command], work, None, [{"PYTHONPATH": str(code)}])[0]
            metrics = json.loads((run_dir / "metrics.json").read_text())
            memory = metrics["generation"]["memory"]
            out["code"][name] = {"commit": commit, "stage_peak_mib": memory["peak_mib"],
                                 "stage_start_mib": memory["at_start_mib"], "measure": memory["measure"],
                                 "job_peak_rss_mib": measured["rss"], "stage_s": metrics["generation"]["seconds"],
                                 "decoding": metrics["generation"]["decoding"],
                                 "prompts": metrics["generation"]["prompts"]["count"]}
    finally:
        if EVAL_MEMORY_BEFORE is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "before")],
                           capture_output=True)
    return out


def render_eval_memory(figures: dict) -> list[str]:
    model = figures["model"]
    current = figures["code"]["current"]
    lines = [f"The default run (embedded DPO, {counted(figures['steps'], 'step')}, then its generation eval stage as "
             f"shipped: {current['prompts']} prompts, {current['decoding']['samples_per_prompt']} sample(s) each, "
             f"up to {current['decoding']['max_new_tokens']} new tokens, batch {current['decoding']['batch_size']}) "
             f"on a model of Qwen2.5's vocabulary size built like the tiny one ({model['vocab_size']} output rows, "
             f"hidden {model['hidden']}, {model['layers']} layers, {model['parameters'] / 1e6:.0f}M parameters). "
             f"The stage's peak is the {current['measure']} from the stage's start to its end, what training left "
             "held included.", "",
             "| code | commit | held at the stage's start MiB | stage peak MiB | job peak RSS MiB | stage s |",
             "|---|---|---|---|---|---|"]
    for name, code in figures["code"].items():
        lines.append(f"| {name} | {str(code['commit'])[:10]} | {code['stage_start_mib']:.0f} | "
                     f"{code['stage_peak_mib']:.0f} | {code['job_peak_rss_mib']:.0f} | {code['stage_s']:.0f} |")
    if "before" in figures["code"]:
        before = figures["code"]["before"]
        lines += ["", f"Stage peak, current / before: {current['stage_peak_mib'] / before['stage_peak_mib']:.2f}."]
    return lines


RUNNERS = {"methods": bench_methods, "config": bench_config, "data": bench_data, "data_large": bench_data_large,
           "sweep": bench_sweep, "halving": bench_halving, "generation": bench_generation, "lora_memory": bench_lora_memory,
           "eval_memory": bench_eval_memory, "lengths": lengths.bench}
RENDERERS = {"methods": render_methods, "config": render_config, "data": render_data, "data_large": render_data_large,
             "sweep": render_sweep, "halving": halving.render, "generation": render_generation, "lora_memory": render_lora_memory,
             "eval_memory": render_eval_memory, "lengths": lengths.render}
