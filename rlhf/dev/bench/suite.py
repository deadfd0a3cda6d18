"""make bench (python -m rlhf.bench [--only SECTION ...]): measure the platform and write BENCHMARKS.md.

Everything runs in one invocation, with the two sides of each comparison run so that machine
noise hits both alike:
- the platform against a plain TRL script (rlhf.dev.bench.plain_trl) on the same model, data and
  settings: median step time, time to first step, peak memory, per method. The two sides run
  at the same moment, each pinned to its own core, the cores swapping between repeats;
- configuration speed: `--cfg job`, a validation error and a bad row of a string-family dataset;
- data preparation throughput on 100k rows of chatml.intel, cold and cached;
- the data stage on a large dataset (100k rows, texts of 20-400 characters, max_length 2048)
  against a plain TRL script: time to the first step, cold and warm, DPO and KTO, a byte-level
  tokenizer and the embedded one (rlhf.dev.bench.data_large);
- a 4-job DPO beta sweep against 4 independent runs, with their results compared;
- the default run with its generation eval stage against the same run without it;
- peak memory of LoRA DPO with the reference from the disabled adapter against a separate
  reference model, on a larger benchmark model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhf.config.tree import REPO

SECTIONS = ("methods", "config", "data", "data_large", "sweep", "generation", "lora_memory")


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", WANDB_MODE="disabled",
               PYTHONPATH=str(REPO) + os.pathsep + out.get("PYTHONPATH", ""), TQDM_DISABLE="1",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    return out


SWAP_EVERY_S = 0.25


def _pin(pid: int, core: int) -> None:
    """Pin every thread of a running process to one core (a thread that just ended is skipped)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
        except (ProcessLookupError, FileNotFoundError):
            pass


def run_together(commands: list[list[str]], cwd: Path, cores: list[int] | None) -> list[dict]:
    """Start the commands at the same moment and wait for all. With `cores` (one per command),
    each runs pinned to its own core and the cores rotate among the commands every
    SWAP_EVERY_S, so each spends the same share of its time on each core: a core that a busy
    neighbour slows for a while slows them alike. Per command: start time, wall seconds, peak
    RSS (MiB, from wait4)."""
    procs = []
    for index, command in enumerate(commands):
        log = open(cwd / f"together-{index}.log", "w")
        pin = (lambda c=cores[index]: os.sched_setaffinity(0, {c})) if cores else None
        procs.append({"start": time.time(), "log": log,
                      "proc": subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=log,
                                               preexec_fn=pin)})
    out: dict[int, dict] = {}
    turn = 0
    while len(out) < len(procs):
        time.sleep(SWAP_EVERY_S if cores else 0.05)
        turn += 1
        for index, entry in enumerate(procs):
            proc = entry["proc"]
            if index in out:
                continue
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                if cores:
                    _pin(proc.pid, cores[(index + turn) % len(cores)])
                continue
            entry["log"].close()
            if os.waitstatus_to_exitcode(status) != 0:
                tail = (cwd / f"together-{index}.log").read_text()[-3000:]
                raise RuntimeError(f"{' '.join(commands[index])} failed:\n{tail}")
            out[index] = {"start": entry["start"], "seconds": time.time() - entry["start"],
                          "rss": usage.ru_maxrss / 1024}
    return [out[index] for index in range(len(procs))]


def platform_command(method: str, steps: int, work: Path, run_dir: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "rlhf.train", f"method={method}", f"method.max_steps={steps}",
            "method.logging_steps=1", "method.save_steps=100000", "dataset.eval=[]", "dataset.shuffle=false",
            # Plain TRL generates nothing; the generation eval stage is measured on its own (bench_generation).
            "evaluate.enabled=false",
            f"hydra.run.dir={run_dir}", f"cache_dir={work / 'cache'}", f"hardware.torch_threads={threads}"]


def platform_stamps(run_dir: Path) -> dict:
    history = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    return {"stamps": [h["time"] for h in history if "loss" in h], "cpu": [h["cpu_time"] for h in history if "loss" in h]}


def plain_stamps(out: Path) -> dict:
    times = json.loads((out / "times.json").read_text())
    return {"stamps": times["steps"], "cpu": times["cpu"]}


def _median_interval(stamps: list[float]) -> float:
    """The median interval between consecutive stamps, in ms."""
    return 1000 * statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def _median_step(run: dict, key: str) -> float:
    """A run's median interval between optimizer steps after the first, in ms."""
    return _median_interval(run[key][1:])


def summarise(runs: list[dict]) -> dict:
    return {"median_step_ms": statistics.median(_median_step(run, "stamps") for run in runs),
            "median_step_cpu_ms": statistics.median(_median_step(run, "cpu") for run in runs),
            "first_step_s": statistics.median(run["stamps"][0] - run["start"] for run in runs),
            "peak_rss_mib": max(run["rss"] for run in runs),
            "wall_s": statistics.median(run["seconds"] for run in runs)}


def _overlap(run: dict, other: dict) -> tuple[list[float], list[float]]:
    """The steps of `run` made while `other` was training too (both past their first step): a
    step made while the other side was still importing or already done ran on a quieter
    machine, and would favour one side."""
    low, high = max(run["stamps"][1], other["stamps"][1]), min(run["stamps"][-1], other["stamps"][-1])
    keep = [i for i, t in enumerate(run["stamps"]) if low <= t <= high]
    if len(keep) < 12:  # barely overlapping runs: every step after the first
        keep = list(range(1, len(run["stamps"])))
    return [run["stamps"][i] for i in keep], [run["cpu"][i] for i in keep]


def paired_ratios(platform_runs: list[dict], plain_runs: list[dict]) -> dict:
    """Platform / TRL within each pair of runs made together (step times over the steps both
    made at the same time), then the median and range over pairs."""
    def ratios(each: list[float]) -> dict:
        return {"median": statistics.median(each), "min": min(each), "max": max(each)}

    pairs = [(_overlap(p, t), _overlap(t, p)) for p, t in zip(platform_runs, plain_runs)]
    return {"step": ratios([_median_interval(p[0]) / _median_interval(t[0]) for p, t in pairs]),
            "step_cpu": ratios([_median_interval(p[1]) / _median_interval(t[1]) for p, t in pairs]),
            "first_step": ratios([(p["stamps"][0] - p["start"]) / (t["stamps"][0] - t["start"])
                                  for p, t in zip(platform_runs, plain_runs)])}


def _pair(commands: list[list[str]], work: Path, index: int, cores: list[int]) -> list[dict]:
    """One repeat: the commands together, on two rotating cores (which side starts on which
    alternates between repeats), or one after the other on a machine with one core."""
    if len(cores) >= 2:
        first = index % 2
        return run_together(commands, work, [cores[first], cores[1 - first]])
    return [run_together([command], work, None)[0] for command in commands]


def plain_command(method: str, steps: int, out: Path) -> list[str]:
    """The plain TRL script of `method`'s trainer (rlhf.dev.bench.plain_trl, keyed by TRL's class)."""
    from rlhf.methods import lookup

    trainer = lookup(method).trl_trainer.rpartition(":")[2]
    return [sys.executable, "-m", "rlhf.dev.bench.plain_trl", trainer, str(out), str(steps), "1"]


def benchmarked_methods() -> tuple[list[str], str]:
    """Every registered method, and the control: the method of the embedded default
    (conf/config.yaml), whose plain TRL script is also measured against itself."""
    from rlhf.launch.compose import compose_job
    from rlhf.methods import METHODS

    return list(METHODS), str(compose_job([]).method.kind)


def bench_methods(work: Path, steps: int, repeats: int) -> dict:
    """Each repeat runs the platform and plain TRL at the same time, each with one torch thread
    and pinned to one of two cores, the cores rotating between them (run_together). The control
    measures plain TRL against itself the same way: the spread a zero overhead shows here."""
    cores = sorted(os.sched_getaffinity(0))
    methods, control = benchmarked_methods()
    results = {}
    for method in methods:
        platform_runs, plain_runs = [], []
        for index in range(repeats):
            run_dir, out = work / f"platform-{method}-{index}", work / f"plain-{method}-{index}"
            commands = [platform_command(method, steps, work, run_dir, threads=1), plain_command(method, steps, out)]
            platform_side, plain_side = _pair(commands, work, index, cores)
            platform_runs.append({**platform_side, **platform_stamps(run_dir)})
            plain_runs.append({**plain_side, **plain_stamps(out)})
        results[method] = {"platform": summarise(platform_runs), "plain": summarise(plain_runs),
                           "ratio": paired_ratios(platform_runs, plain_runs)}
        print(f"{method}: {results[method]}", file=sys.stderr)
    first_runs, second_runs = [], []
    for index in range(repeats):
        outs = [work / f"control-a-{index}", work / f"control-b-{index}"]
        sides = _pair([plain_command(control, steps, out) for out in outs], work, index, cores)
        first_runs.append({**sides[0], **plain_stamps(outs[0])})
        second_runs.append({**sides[1], **plain_stamps(outs[1])})
    results["_control"] = {"method": control, "ratio": paired_ratios(first_runs, second_runs)}
    results["_layout"] = ("together, each on one of two cores, the cores swapping between the two every "
                          f"{SWAP_EVERY_S} s" if len(cores) >= 2 else "one after the other (one core)")
    return results


def bench_config(work: Path, repeats: int) -> dict:
    """Seconds until the command line answers: printing a config, a config error, a bad row of a
    string-family dataset (found before any job starts, without torch), --help."""
    missing = work / "row_missing_field.jsonl"
    missing.write_text(json.dumps({"question": "q", "chosen": "a"}) + "\n")
    bad_json = work / "row_bad_json.jsonl"
    bad_json.write_text(json.dumps({"question": "q", "chosen": "a", "rejected": "b"}) + '\n{"question": \n')
    rows = ["dataset.type=chatml.intel", "dataset.eval=[]", f"cache_dir={work / 'row_cache'}"]
    out = {}
    for name, args, code in (("cfg_job", ["--cfg", "job"], 0), ("validation_error", ["method.beta=-1"], 2),
                             ("row_error_missing_field", [f"dataset.path={missing}", *rows], 2),
                             ("row_error_bad_json", [f"dataset.path={bad_json}", *rows], 2),
                             ("help", ["--help"], 0)):
        times = []
        for _ in range(repeats):
            start = time.time()
            proc = subprocess.run([sys.executable, "-m", "rlhf.train", *args], cwd=work, env=env(), capture_output=True,
                                  text=True)
            times.append(time.time() - start)
            if proc.returncode != code:
                raise RuntimeError(f"rlhf.train {' '.join(args)} exited {proc.returncode}, not {code}:\n"
                                   f"{proc.stderr[-3000:]}")
        out[name] = {"median_s": statistics.median(times), "max_s": max(times)}
    return out


def bench_data(work: Path, rows: int) -> dict:
    data = work / "big.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            row = {"question": f"Question number {i}: name a fruit?", "chosen": f"mango {i}", "rejected": f"tiger {i}"}
            if i % 3 == 0:
                row["system"] = "Answer in a few words."
            f.write(json.dumps(row) + "\n")
    code = f"""
import json, sys, time
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.data.cache import prepare_data
from rlhf.models.loading import load_tokenizer
run = validate(compose_job(["cache_dir={work / 'data_cache'}", "dataset.path={data}", "dataset.type=chatml.intel",
                            "dataset.eval=[]"]))
tokenizer = load_tokenizer(run.model)
out = {{}}
for attempt in ("cold", "cached"):
    start = time.perf_counter()
    prepared = prepare_data(run, tokenizer)
    out[attempt] = {{"seconds": time.perf_counter() - start, "cache": prepared.cache, "rows": len(prepared.train)}}
print(json.dumps(out))
"""
    shutil.rmtree(work / "data_cache", ignore_errors=True)
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env(), capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for attempt in result.values():
        attempt["rows_per_s"] = rows / attempt["seconds"]
    result["speedup"] = result["cold"]["seconds"] / result["cached"]["seconds"]
    return result


def bench_sweep(work: Path, betas: tuple[float, ...]) -> dict:
    """One 4-job sweep command against 4 independent commands (each its own cache)."""
    sweep_dir = work / "sweep"
    start = time.time()
    subprocess.run([sys.executable, "-m", "rlhf.train", "-m", f"method.beta={','.join(map(str, betas))}",
                    f"hydra.sweep.dir={sweep_dir}", f"cache_dir={work / 'sweep_cache'}"], cwd=work, env=env(),
                   capture_output=True, check=True)
    sweep_seconds = time.time() - start
    start = time.time()
    for i, beta in enumerate(betas):
        subprocess.run([sys.executable, "-m", "rlhf.train", f"method.beta={beta}", f"hydra.run.dir={work / f'ind{i}'}",
                        f"cache_dir={work / f'ind_cache{i}'}"], cwd=work, env=env(), capture_output=True, check=True)
    independent_seconds = time.time() - start
    from rlhf.run.rundir import job_dirs

    identical = True
    for i, job in enumerate(job_dirs(sweep_dir)):
        a = json.loads((job / "metrics.json").read_text())["eval"]
        b = json.loads((work / f"ind{i}" / "metrics.json").read_text())["eval"]
        keys = [k for k in a if k.startswith("eval_") and "runtime" not in k and "per_second" not in k]
        identical &= all(a[k] == b[k] for k in keys)
    return {"sweep_s": sweep_seconds, "independent_s": independent_seconds,
            "ratio": sweep_seconds / independent_seconds, "identical_results": identical}


def bench_generation(work: Path, repeats: int) -> dict:
    """The default run (embedded DPO, whose generation eval stage is on) against the same run
    with the stage off (evaluate.enabled=false): the wall time of the whole command, the two
    run together on rotating cores as in bench_methods, each with a cache of its own (so the
    stage also generates the reference's completions: a single run's worst case)."""
    cores = sorted(os.sched_getaffinity(0))
    on, off, stage, figures = [], [], [], []
    for index in range(repeats):
        dirs = [work / f"generation-on-{index}", work / f"generation-off-{index}"]
        commands = [[sys.executable, "-m", "rlhf.train", f"hydra.run.dir={d}", f"cache_dir={d}-cache",
                     "hardware.torch_threads=1", *extra] for d, extra in zip(dirs, ([], ["evaluate.enabled=false"]))]
        with_stage, without = _pair(commands, work, index, cores)
        on.append(with_stage["seconds"])
        off.append(without["seconds"])
        block = json.loads((dirs[0] / "metrics.json").read_text())["generation"]
        stage.append(block["seconds"])
        figures.append(block["metrics"])
    ratios = [a / b for a, b in zip(on, off)]
    keys = ("topic_reward", "reference/topic_reward", "win_rate", "kl", "length")
    return {"repeats": repeats, "on_s": statistics.median(on), "off_s": statistics.median(off),
            "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
            "stage_s": statistics.median(stage),
            "figures": {k: statistics.median(f[k] for f in figures) for k in keys},
            "methods": generation_per_method(work)}


def generation_per_method(work: Path) -> dict:
    """Each method's embedded default (`python -m rlhf.train method=<m>`), as shipped: what its
    trained policy generates against the untrained model, by the stage's figures."""
    from rlhf.methods import METHODS as REGISTERED

    out = {}
    for method in sorted(REGISTERED):
        run_dir = work / f"generation-{method}"
        subprocess.run([sys.executable, "-m", "rlhf.train", f"method={method}", f"hydra.run.dir={run_dir}",
                        f"cache_dir={work / 'generation-cache'}"], cwd=work, env=env(), capture_output=True,
                       check=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        block = metrics.get("generation")
        if block is None:  # a method whose model does not generate (a reward model)
            continue
        out[method] = {"metrics": block["metrics"], "intervals": block["intervals"], "seconds": metrics["seconds"]}
    return out


def bench_lora_memory(work: Path, steps: int) -> dict:
    from rlhf.assets.build_tiny import build

    model_dir = work / "bench-model"
    if not (model_dir / "model.safetensors").is_file():
        build(model_dir, hidden=1024, layers=16, heads=16, intermediate=4096)
    out = {}
    variants = {
        "lora_adapter_disabled": ["peft=lora"],
        "lora_separate_reference": ["peft=lora", "peft.rl_adapter_ref_model=true"],
        "full_separate_reference": [],
    }
    for name, extra in variants.items():
        run_dir = work / f"mem-{name}"
        command = [sys.executable, "-m", "rlhf.train", f"model.name_or_path={model_dir}",
                   "method.precompute_ref_log_probs=false", f"method.max_steps={steps}", "method.micro_batch_size=8",
                   "dataset.eval=[]", "method.save_steps=100000", f"hydra.run.dir={run_dir}",
                   f"cache_dir={work / 'cache'}", *extra]
        measured = run_together([command], work, None)[0]
        out[name] = {"peak_rss_mib": measured["rss"], "seconds": measured["seconds"]}
    out["ratio_vs_lora_separate"] = out["lora_adapter_disabled"]["peak_rss_mib"] / out["lora_separate_reference"][
        "peak_rss_mib"]
    out["ratio_vs_full_separate"] = out["lora_adapter_disabled"]["peak_rss_mib"] / out["full_separate_reference"][
        "peak_rss_mib"]
    return out


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch

    return (f"{platform.node()}: {os.cpu_count()} cores ({cpu}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def render(results: dict, command: str) -> str:
    """BENCHMARKS.md's figures: a header naming the command, the machine and the date, then each
    section of `results` the bench measured, in SECTIONS order."""
    lines = ["# Benchmarks", "", f"Command: `{command}`  ", f"Machine: {results['machine']}  ",
             f"Date: {results['date']}", ""]
    for section in SECTIONS:
        if section in results:
            lines += RENDERERS[section](results) + [""]
    return "\n".join(lines)


def ratio_text(r: dict) -> str:
    """A paired ratio: the median over pairs, the lowest and highest pair in brackets."""
    return f"{r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]"


def render_methods(results: dict) -> list[str]:
    methods = results["methods"]
    lines = ["## Platform against a plain TRL script (same model, data, settings)", "",
             "Both sides train on the same rows in the same order (the platform with dataset.shuffle=false) "
             "with TRL's defaults, fused AdamW included. "
             f"Layout: {methods['_layout']}. In each of {results['repeats']} repeats the two runs "
             f"({results['steps']} steps each, one torch thread each) start at the same moment; which side starts "
             "on which core alternates between repeats. Step time: a run's median interval between optimizer "
             "steps, over the steps both runs of the pair made at the same time (wall clock, and CPU time of the "
             "process). First step: from process start to the end of the first step. Ratio: platform / TRL "
             "within each pair, then the median over pairs, with the lowest and highest pair in brackets. Times "
             "per side are medians over runs; peak RSS is the highest of the runs.", "",
             "| method | step ms (platform / TRL) | step ratio | step CPU ratio | first step s (platform / TRL) | "
             "first step ratio | peak MiB (platform / TRL) |", "|---|---|---|---|---|---|---|"]
    for method, r in methods.items():
        if method.startswith("_"):
            continue
        p, t, q = r["platform"], r["plain"], r["ratio"]
        lines.append(f"| {method} | {p['median_step_ms']:.1f} / {t['median_step_ms']:.1f} | {ratio_text(q['step'])} "
                     f"| {ratio_text(q['step_cpu'])} | {p['first_step_s']:.2f} / {t['first_step_s']:.2f} | "
                     f"{ratio_text(q['first_step'])} | {p['peak_rss_mib']:.0f} / {t['peak_rss_mib']:.0f} |")
    control, spread = methods["_control"], methods["_control"]["ratio"]
    return lines + ["", f"Control, plain TRL ({control['method']}) against itself, measured the same way: step ratio "
                    f"{ratio_text(spread['step'])}, step CPU ratio {ratio_text(spread['step_cpu'])}, first step ratio "
                    f"{ratio_text(spread['first_step'])}. A ratio of the table inside this spread is an overhead this "
                    "machine cannot tell from none."]


def render_config(results: dict) -> list[str]:
    lines = ["## Configuration speed", "", "| command | median s | max s |", "|---|---|---|"]
    return lines + [f"| {name} | {r['median_s']:.3f} | {r['max_s']:.3f} |" for name, r in results["config"].items()]


def render_data(results: dict) -> list[str]:
    data = results["data"]
    return [f"## Data preparation ({data['cold']['rows']} rows of chatml.intel)", "",
            "| pass | seconds | rows/s |", "|---|---|---|",
            f"| cold | {data['cold']['seconds']:.2f} | {data['cold']['rows_per_s']:.0f} |",
            f"| cached | {data['cached']['seconds']:.3f} | {data['cached']['rows_per_s']:.0f} |",
            "", f"Cached is {data['speedup']:.0f}x faster than cold."]


def render_sweep(results: dict) -> list[str]:
    sweep = results["sweep"]
    return ["## A 4-job DPO beta sweep against 4 independent runs", "",
            f"One `-m method.beta=...` command: {sweep['sweep_s']:.1f} s; four separate commands, each with its own "
            f"cache: {sweep['independent_s']:.1f} s; ratio {sweep['ratio']:.2f}. Identical eval metrics per beta: "
            f"{sweep['identical_results']}."]


def render_generation(results: dict) -> list[str]:
    generation = results["generation"]
    g = generation["figures"]
    lines = ["## The generation eval stage (the default run: embedded DPO)", "",
             f"Wall time of `python -m rlhf.train` with the stage against `evaluate.enabled=false`, the two run "
             f"together on rotating cores, {generation['repeats']} repeats, each side with a fresh cache (so the "
             "stage also generates the reference's completions):", "",
             "| with the stage s | without s | ratio (median [min, max] over pairs) | the stage's own s |",
             "|---|---|---|---|",
             f"| {generation['on_s']:.2f} | {generation['off_s']:.2f} | {ratio_text(generation['ratio'])} | "
             f"{generation['stage_s']:.2f} |",
             "", f"What it measured (medians over the repeats): topic_reward {g['topic_reward']:.3f} against the "
             f"untrained model's {g['reference/topic_reward']:.3f}, win rate {g['win_rate']:.3f}, KL "
             f"{g['kl']:.2f} nats, {g['length']:.1f} tokens per completion.", "",
             "Each method's embedded default as shipped (`python -m rlhf.train method=<m>`, one run each): its "
             "trained policy's answers to the 60 held-out topic prompts against the untrained model's, 95% "
             "intervals over prompts (Student's t).", "",
             "| method | topic_reward trained | untrained | win rate vs untrained | KL nats | tokens | run s |",
             "|---|---|---|---|---|---|---|"]

    def interval(figures: dict, name: str) -> str:
        i = figures["intervals"][name]
        return f"{figures['metrics'][name]:.3f} [{i['ci_low']:.3f}, {i['ci_high']:.3f}]"

    for method, figures in generation["methods"].items():
        m = figures["metrics"]
        lines.append(f"| {method} | {interval(figures, 'topic_reward')} | {interval(figures, 'reference/topic_reward')}"
                     f" | {interval(figures, 'win_rate')} | {m['kl']:.2f} | {m['length']:.1f} | "
                     f"{figures['seconds']:.0f} |")
    return lines


def render_lora_memory(results: dict) -> list[str]:
    memory = results["lora_memory"]
    lines = ["## LoRA DPO peak memory (benchmark model: hidden 1024, 16 layers, ~200M parameters, fp32)", "",
             "| variant | peak RSS MiB |", "|---|---|"]
    for name in ("lora_adapter_disabled", "lora_separate_reference", "full_separate_reference"):
        lines.append(f"| {name} | {memory[name]['peak_rss_mib']:.0f} |")
    return lines + ["", f"Adapter-disabled reference / separate reference (LoRA): "
                    f"{memory['ratio_vs_lora_separate']:.2f}; / full DPO with a separate reference: "
                    f"{memory['ratio_vs_full_separate']:.2f}."]


def render_data_large(results: dict) -> list[str]:
    from rlhf.dev.bench import data_large

    return data_large.render(results["data_large"])


RENDERERS = {"methods": render_methods, "config": render_config, "data": render_data, "data_large": render_data_large,
             "sweep": render_sweep, "generation": render_generation, "lora_memory": render_lora_memory}


HAND_WRITTEN = "## Reading these figures"  # a section of BENCHMARKS.md that a person writes


def kept_notes(out: Path) -> str:
    """The hand-written section of the previous BENCHMARKS.md (from its heading to the end), so a
    new run replaces the figures and keeps the reading of them for a person to update."""
    text = out.read_text() if out.exists() else ""
    at = text.find(HAND_WRITTEN)
    return "\n" + text[at:] if at >= 0 else ""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rlhf.bench")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the data sections (data, data_large)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections to run: " + " ".join(SECTIONS))
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "steps": args.steps,
               "repeats": args.repeats}
    if "methods" in sections:
        results["methods"] = bench_methods(work, args.steps, args.repeats)
    if "config" in sections:
        results["config"] = bench_config(work, 5)
    if "data" in sections:
        results["data"] = bench_data(work, args.rows)
    if "data_large" in sections:
        from rlhf.dev.bench import data_large

        results["data_large"] = data_large.bench_data_large(work / "data_large", args.rows, env())
        print("\n".join(data_large.render(results["data_large"])), file=sys.stderr)
    if "sweep" in sections:
        results["sweep"] = bench_sweep(work, (0.05, 0.1, 0.2, 0.4))
    if "generation" in sections:
        results["generation"] = bench_generation(work, 5)
    if "lora_memory" in sections:
        results["lora_memory"] = bench_lora_memory(work, 6)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(results, indent=2))
    if set(sections) >= set(SECTIONS):
        command = "make bench  (python -m rlhf.bench " + " ".join(sys.argv[1:]) + ")"
        out = Path(args.out)
        notes = kept_notes(out)
        out.write_text(render(results, command.replace(" )", ")")) + notes)
        print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
