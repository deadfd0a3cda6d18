"""python -m rlhf.gpu_check [--cpu] [--out DIR] [--only NAME,...] [--list]      (make gpu-check)

The platform on a GPU host, checked by one command (under 10 minutes on one GPU). It builds
its own model, nothing from the hub: a Qwen2-architecture causal LM of ~76M random weights in
bf16 with the shipped tiny ChatML tokenizer. Then each check runs through the real platform,
`python -m rlhf.train <overrides>` in a subprocess into its own run dir under --out, in the
platform's default precision (model.dtype=auto: float32 weights that train, bf16 autocast)
unless the check is about another. A check passes when the run exited 0 with SUCCESS and its
run dir shows it trained as asked (rlhf.cluster.findings): the strategy metrics.json records
is the one asked for, every logged loss is finite, every trainable parameter changed from the
built model, the saved model loads back with every key, and the generation eval ran at the end.
Which checks run depends on the machine (`plan`):

- one GPU: DPO (the default precision; padding-free, as every DPO check, through the sdpa
  per-sequence kernel), DPO padding-free through flash attention 2 (flash-attn installed), DPO
  with bf16 weights, LoRA DPO, QLoRA DPO (bitsandbytes installed), GRPO generating with transformers, GRPO with vLLM colocated (vllm
  installed);
- two or more: GRPO against the job's own vLLM server on GPU 1 (hardware=gpu_vllm, as a SLURM
  job runs it) and against one started first by hand (`rlhf.vllm_serve`), training on GPU 0;
  with one process per GPU, DPO over DDP, FSDP (its generation eval loads the saved model on
  rank 0) and DeepSpeed ZeRO-2 and ZeRO-3 (deepspeed installed), and GRPO over FSDP.

`--cpu` runs the checks that have a CPU option through the same code on this machine's CPU
(one process: hardware=cpu; two: cpu_2proc, cpu_2proc_fsdp), on a smaller model of the same
architecture (CPU_SHAPE): the checking itself is then tested where no GPU is (the test suite
runs it).

It writes <out>/gpu_check.json and prints a table: each check passed, skipped (why) or failed
(what its run dir shows wrong, or the last line of its failure), with its step time (the median
interval between logged training steps) and rank 0's peak memory over the whole job, save and
generation eval included (metrics.json: torch's allocator on a GPU, the resident set on the CPU).
Exit code 0 when no check failed, 1 when one did, 2 when none could run (no GPU, a bad option).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.cluster.findings import Expect, findings
from rlhf.config.checks import DEEPSPEED_EXTRA, cuda_driver_present
from rlhf.config.tree import REPO
from rlhf.core.errors import RlhfError, did_you_mean
from rlhf.core.versions import installed_versions
from rlhf.methods import dpo, grpo
from rlhf.rewards import completion_text

# Optional packages a check needs, and how to install each.
INSTALL = {
    "bitsandbytes": "pip install bitsandbytes",
    "vllm": "pip install -e '.[vllm]'",
    "deepspeed": DEEPSPEED_EXTRA,
    "flash_attn": "pip install flash-attn --no-build-isolation",
}

# The checks' model: Qwen2 as Qwen2.5 builds it (grouped-query attention, q/k/v biases, tied
# embeddings) at ~76M parameters, enough for bf16 kernels, sharding and vLLM to do real work.
MODEL_SHAPE = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
               "num_key_value_heads": 4, "max_position_embeddings": 2048}
# The same architecture for --cpu, small enough that the whole plan runs in minutes on 2 cores.
CPU_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}
MODEL_DIR = "model"
STEPS = 10
TRAIN_TIMEOUT_S = 1200
SERVER_TIMEOUT_S = 600
JSON_NAME = "gpu_check.json"

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
# How a server check reaches its vLLM server.
JOB_SERVER = "job"  # the job starts its own (rlhf.cluster.vllm_server.server_for_job), as a SLURM job does
HAND_SERVER = "by hand"  # `python -m rlhf.vllm_serve` with the same overrides, started first


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    overrides: tuple[str, ...]  # the method and its settings
    gpu: str  # the hardware option on a GPU host
    cpu: str | None = None  # the hardware option of --cpu; None: a GPU path only
    gpus: int = 1  # GPUs the check needs at least
    needs: tuple[str, ...] = ()  # packages of INSTALL it needs
    per_gpu: bool = False  # one training process per GPU of the machine
    server: str | None = None  # JOB_SERVER or HAND_SERVER: trains against a vLLM server


def varied_reward(completions: list, **kwargs: Any) -> list[float]:
    """The GRPO checks' reward: the share of distinct characters in a completion. The shipped
    topic reward scores most completions of a random model 0, and a group whose completions all
    score alike has no advantage and gives no gradient; this one tells a random model's
    completions apart, so every step has a gradient to move every weight."""
    texts = [completion_text(c) for c in completions]
    return [len(set(text)) / max(len(text), 1) for text in texts]


DPO = (f"method={dpo.SPEC.kind}",)
GRPO = (f"method={grpo.SPEC.kind}", "method.max_completion_length=32",
        f"method.reward_funcs=[{__name__}.{varied_reward.__name__}]")
VLLM = ("method.use_vllm=true", "vllm.max_model_len=512")
SERVED = (*GRPO, *VLLM, "method.vllm_mode=server", "vllm.gpu_memory_utilization=0.5")
# bf16 weights round an AdamW update smaller than half their spacing away (2e-3 at 1.0, a norm's
# weight): at the others' learning rate, 1e-5, the RMSNorm weights of the --cpu model did not move
# in 10 steps (measured), which the weights finding reports. A check of bf16 weights asks whether
# the platform trains them, so it uses a rate that moves every bf16 weight in one step.
BIG_STEPS = "method.learning_rate=5.0e-03"
BF16_WEIGHTS = ("model.dtype=bfloat16", BIG_STEPS)
# DeepSpeed with bf16 holds the model itself in bf16 (its float32 master weights live in the
# optimizer: deepspeed/runtime/engine.py, _configure_distributed_model) and saves that bf16 copy,
# so its checks need the same rate for their saved weights to show the training (read, not run).
ZERO = (*DPO, BIG_STEPS)

CHECKS = (
    Check("dpo_fp32_weights", "full DPO in the default precision (float32 weights; bf16 autocast on a GPU)", DPO, "gpu", "cpu"),
    Check("dpo_flash_packed", "DPO padding-free through flash attention 2's variable-length kernel (the packed "
          "row's sequences read from its position ids)", (*DPO, "model.attn_implementation=flash_attention_2"), "gpu",
          needs=("flash_attn",)),
    Check("dpo_bf16_weights", "full DPO with bf16 weights (model.dtype=bfloat16)", (*DPO, *BF16_WEIGHTS), "gpu"),
    Check("lora_dpo", "LoRA DPO (reference: the adapter switched off)", (*DPO, "peft=lora"), "gpu", "cpu"),
    Check("qlora_dpo", "QLoRA DPO (4-bit NF4 base)", (*DPO, "peft=qlora"), "gpu", needs=("bitsandbytes",)),
    Check("grpo_transformers", "GRPO generating with transformers", GRPO, "gpu", "cpu"),
    Check("grpo_vllm_colocate", "GRPO generating with vLLM in the training process",
          (*GRPO, *VLLM, "method.vllm_mode=colocate", "vllm.gpu_memory_utilization=0.3"), "gpu", needs=("vllm",)),
    Check("grpo_vllm_server", "GRPO against the job's own vLLM server (as a SLURM job runs it): GPU 1 serves, "
          "GPU 0 trains", SERVED, "gpu_vllm", gpus=2, needs=("vllm",), server=JOB_SERVER),
    Check("grpo_vllm_serve", "GRPO against rlhf.vllm_serve started first on GPU 1, training on GPU 0", SERVED,
          "gpu_vllm", gpus=2, needs=("vllm",), server=HAND_SERVER),
    Check("ddp", "DPO, DDP, one process per GPU (two on the CPU)", DPO, "gpu_ddp_8", "cpu_2proc", gpus=2,
          per_gpu=True),
    Check("fsdp", "DPO, FSDP full shard, one process per GPU (two on the CPU); the generation eval of the saved "
          "model on rank 0", DPO, "gpu_fsdp_8", "cpu_2proc_fsdp", gpus=2, per_gpu=True),
    Check("grpo_fsdp", "GRPO, FSDP full shard, one process per GPU (two on the CPU)", GRPO, "gpu_fsdp_8",
          "cpu_2proc_fsdp", gpus=2, per_gpu=True),
    Check("zero2", "DPO, DeepSpeed ZeRO-2, one process per GPU", ZERO, "gpu_zero2_8", gpus=2, needs=("deepspeed",),
          per_gpu=True),
    Check("zero3", "DPO, DeepSpeed ZeRO-3, one process per GPU", ZERO, "gpu_zero3_8", gpus=2, needs=("deepspeed",),
          per_gpu=True),
)


@dataclass(frozen=True)
class Machine:
    """What decides the plan: the GPUs torch sees, which optional packages are installed, and
    whether the checks run on the CPU options (--cpu)."""

    gpus: int
    packages: frozenset[str] = frozenset()
    cpu: bool = False


@dataclass(frozen=True)
class Planned:
    check: Check
    skip: str | None  # why it does not run here; None: it runs


# ---------------------------------------------------------------------------- planning (pure)


def select(only: str | None) -> list[Check]:
    """The checks `--only a,b` names (all of them without it), in the plan's order."""
    if only is None:
        return list(CHECKS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = [c.name for c in CHECKS]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        hints = "".join(did_you_mean(n, known) for n in unknown)
        raise RlhfError(f"--only {only!r}: no check named {', '.join(map(repr, unknown)) or 'at all'}{hints}; "
                        f"the checks: {', '.join(known)}")
    return [c for c in CHECKS if c.name in names]


def why_skipped(check: Check, machine: Machine) -> str | None:
    if machine.cpu:
        return None if check.cpu else "a GPU path: no CPU option runs it (run it on a GPU host)"
    if machine.gpus < check.gpus:
        return f"needs {check.gpus} GPU{'s' if check.gpus > 1 else ''}, this machine has {machine.gpus}"
    missing = [p for p in check.needs if p not in machine.packages]
    if missing:
        return "; ".join(f"{p} is not installed ({INSTALL[p]})" for p in missing)
    return None


def plan(machine: Machine, only: str | None = None) -> list[Planned]:
    return [Planned(check, why_skipped(check, machine)) for check in select(only)]


def set_keys(overrides: Sequence[str]) -> set[str]:
    return {o.split("=", 1)[0] for o in overrides}


def overrides(check: Check, machine: Machine, out: Path, ports: tuple[int, int] | None = None) -> list[str]:
    """The check's `rlhf.train` overrides: its hardware option (the CPU one with --cpu), its
    own, the built model in the default precision unless it says another, a few steps, its run
    dir under `out`. `ports`: the HTTP and weight-sync ports of a server started by hand."""
    found = [f"hardware={check.cpu if machine.cpu else check.gpu}", *check.overrides]
    if not machine.cpu and check.gpus == 1:  # GPU 0 alone: one process seeing several would use nn.DataParallel
        found.append("hardware.train_gpus=[0]")
    if not machine.cpu and check.per_gpu:
        found += [f"hardware.processes_per_node={machine.gpus}", f"hardware.gpus_per_node={machine.gpus}"]
    if ports is not None:
        found += [f"vllm.port={ports[0]}", f"vllm.group_port={ports[1]}"]
    # A modest learning rate: the check is that the platform trains, not what it learns.
    defaults = {"model.dtype": "auto", "method.learning_rate": "1.0e-05"}
    found += [f"{key}={value}" for key, value in defaults.items() if key not in set_keys(check.overrides)]
    return [*found, "model=tiny", f"model.name_or_path={out / MODEL_DIR}", "model.attn_implementation=sdpa",
            f"method.max_steps={STEPS}", "method.logging_steps=1", f"cache_dir={out / 'cache'}",
            f"hydra.run.dir={out / check.name}"]


def commands(check: Check, machine: Machine, out: Path, ports: tuple[int, int] | None = None) -> dict[str, list[str]]:
    """`train`: the training command; `server` (a server started by hand): the vLLM server's,
    started first with the same overrides but Hydra's own (it composes the config, runs no job)."""
    args = overrides(check, machine, out, ports if check.server == HAND_SERVER else None)
    found = {"train": [sys.executable, "-m", "rlhf.train", *args]}
    if check.server == HAND_SERVER:
        found["server"] = [sys.executable, "-m", "rlhf.vllm_serve", *[a for a in args if not a.startswith("hydra.")]]
    return found


def expectation(check: Check) -> Expect:
    return Expect(generation=True, own_server=check.server == JOB_SERVER)


# ---------------------------------------------------------------------------- a run's outcome (pure)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def step_seconds(history: list[dict]) -> float | None:
    """The median time per optimizer step between consecutive logged training steps (the first
    step's own start-up is in no interval), or None with fewer than two logged steps."""
    steps = [(h["step"], h["time"]) for h in history if "loss" in h and "time" in h]
    intervals = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(steps, steps[1:]) if s1 > s0]
    return round(statistics.median(intervals), 4) if intervals else None


def outcome(run_dir: Path, returncode: int, log_text: str = "", expect: Expect | None = None) -> dict[str, Any]:
    """What a finished `rlhf.train` left: passed (exit 0, SUCCESS, and with `expect` no finding
    in its run dir: rlhf.cluster.findings) or failed with what its run dir shows wrong, else the
    last line of its failure (the run dir's FAILED, else the command's own output); its step
    time and rank 0's peak memory over the whole job when it recorded them."""
    from rlhf.cluster.findings import history
    from rlhf.run import rundir

    run_dir = Path(run_dir)
    metrics = rundir.read_metrics(run_dir) if (run_dir / rundir.METRICS).is_file() else {}
    found: dict[str, Any] = {"step_seconds": step_seconds(history(run_dir)),
                             "peak_gpu_mib": metrics.get("job_peak_gpu_memory_mib"),
                             "peak_rss_mib": metrics.get("job_peak_rss_mib"), "error": None}
    if returncode == 0 and (run_dir / rundir.SUCCESS).is_file():
        problems = findings(run_dir, expect) if expect is not None else []
        if problems:
            return {"status": FAILED, **found, "error": "; ".join(problems), "findings": problems}
        return {"status": PASSED, **found}
    error = last_line(rundir.failure(run_dir)) or last_line(log_text)
    if returncode == 0:
        error = f"exited 0 but left no {rundir.SUCCESS} in {run_dir}" + (f" ({error})" if error else "")
    return {"status": FAILED, **found, "error": error or f"exited with code {returncode}"}


def summary(results: list[dict]) -> dict[str, int]:
    return {status: sum(r["status"] == status for r in results) for status in (PASSED, FAILED, SKIPPED)}


def exit_code(results: list[dict]) -> int:
    return 1 if summary(results)[FAILED] else 0


def _cell(value: Any, digits: int = 0) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def peak_cell(result: dict) -> str:
    if result.get("peak_gpu_mib") is not None:
        return f"{result['peak_gpu_mib']} GPU"
    return f"{result['peak_rss_mib']} RSS" if result.get("peak_rss_mib") is not None else ""


def render_table(results: list[dict], note_width: int = 160) -> str:
    lines = ["| check | result | step s | peak MiB (whole job) | note |", "|---|---|---|---|---|"]
    for r in results:
        note = r.get("reason") or r.get("error") or ""
        if len(note) > note_width:
            note = note[:note_width - 3] + "..."
        note = note.replace("|", "\\|")
        lines.append(f"| {r['name']} | {r['status']} | {_cell(r.get('step_seconds'), 3)} | {peak_cell(r)} | {note} |")
    counts = summary(results)
    lines.append(f"\n{counts[PASSED]} of {len(results)} checks passed, {counts[FAILED]} failed, "
                 f"{counts[SKIPPED]} skipped")
    return "\n".join(lines)


def render_plan(planned: list[Planned], machine: Machine, out: Path) -> str:
    packages = ", ".join(f"{p} {'yes' if p in machine.packages else 'no'}" for p in INSTALL)
    where = ("the CPU options (--cpu)" if machine.cpu
             else f"{machine.gpus} GPU{'s' if machine.gpus != 1 else ''}; {packages}")
    lines = [f"{'Checks on' if machine.cpu else 'GPU checks for this machine:'} {where}"]
    width = max(len(p.check.name) for p in planned)
    for p in planned:
        lines.append(f"  {p.check.name:<{width}}  {'run ' if p.skip is None else 'skip'}  {p.check.what}"
                     + (f": {p.skip}" if p.skip else ""))
        if p.skip is None:
            for role, command in commands(p.check, machine, out).items():
                lines.append(f"  {'':<{width}}        {role}: {shlex.join(command[1:])}")
    return "\n".join(lines)


def report(machine: dict, model: dict, results: list[dict]) -> dict[str, Any]:
    return {"machine": machine, "model": model, "steps": STEPS, "checks": results, "summary": summary(results)}


# ---------------------------------------------------------------------------- the machine


def installed_packages() -> frozenset[str]:
    return frozenset(p for p in INSTALL if importlib.util.find_spec(p) is not None)


def this_machine() -> tuple[Machine, str]:
    """The machine, and why it has no GPU to check ("" when it has). A driver is looked for
    first (rlhf.config.checks.cuda_driver_present): without one, torch is not even imported."""
    packages = installed_packages()
    if not cuda_driver_present():
        return Machine(0, packages), ("this machine has no NVIDIA driver (no nvidia-smi on PATH, no "
                                      "/proc/driver/nvidia)")
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return Machine(0, packages), (f"torch {torch.__version__} sees no CUDA device"
                                      + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else
                                         " (a CPU build of torch?)"))
    return Machine(count, packages), ""


def machine_facts(machine: Machine) -> dict[str, Any]:
    """For the JSON: the GPUs (from nvidia-smi, so this process makes no CUDA context) and versions."""
    import torch

    names = []
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True)
        names = [line.strip() for line in proc.stdout.splitlines() if line.strip()]

    return {"gpus": machine.gpus, "cpu_plan": machine.cpu, "gpu_names": names, "cuda": torch.version.cuda,
            "packages": installed_versions(("torch", "transformers", "trl", "peft", "accelerate", *INSTALL))}


# ---------------------------------------------------------------------------- running the checks


def build_model(out_dir: Path, **shape: int) -> dict[str, Any]:
    """The checks' model in `out_dir` (MODEL_SHAPE, `shape` overriding it): random weights in
    bf16, seeded, with the shipped tiny ChatML tokenizer. Returns its description."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from rlhf.assets import ASSETS

    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "models" / "tiny-chatml")
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **{**MODEL_SHAPE, **shape})
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"dir": str(out_dir), "architecture": type(model).__name__, "dtype": "bfloat16",
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": config.vocab_size,
            **{key: getattr(config, key) for key in MODEL_SHAPE}}


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    return env


def start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """`command` in a session of its own (so that stopping it stops its children: torchrun's
    ranks, vLLM's engine), its output to `log`."""
    with open(log, "w") as handle:
        return subprocess.Popen(command, cwd=cwd, env=child_env(), stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


class CheckFailed(Exception):
    """A check that failed before its run dir could tell anything: its server, or a timeout."""


def run_commands(found: dict[str, list[str]], out: Path, name: str, ports: tuple[int, int] | None) -> int:
    """The check's server (a server started by hand) until it answers, then its training
    command to its end; the training command's exit code. Both stopped however this ends."""
    from rlhf.cluster.vllm_server import stop, wait_healthy

    server = None
    log = out / f"{name}.log"
    try:
        if "server" in found:
            server_log = out / f"{name}.server.log"
            server = start(found["server"], server_log, out)
            try:
                wait_healthy(f"http://127.0.0.1:{ports[0]}/health", SERVER_TIMEOUT_S, server)
            except RlhfError as error:
                raise CheckFailed(f"{error}: {last_line(server_log.read_text())}") from None
        process = start(found["train"], log, out)
        try:
            return process.wait(timeout=TRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"did not finish within {TRAIN_TIMEOUT_S} s; see {log}") from None
        finally:
            stop(process)  # on a timeout or Ctrl-C (its session does not get the terminal's), and what it left
    finally:
        stop(server)


def run_check(planned: Planned, machine: Machine, out: Path) -> dict[str, Any]:
    """One check: skipped, or run and judged by its run dir (`outcome`)."""
    check = planned.check
    result: dict[str, Any] = {"name": check.name, "what": check.what}
    if planned.skip is not None:
        return {**result, "status": SKIPPED, "reason": planned.skip}
    from rlhf.cluster.vllm_server import own_ports

    ports = own_ports() if check.server == HAND_SERVER else None
    found = commands(check, machine, out, ports)
    run_dir, log = out / check.name, out / f"{check.name}.log"
    result.update(commands=found, run_dir=str(run_dir), log=str(log))
    print(f"[gpu-check] {check.name}: {check.what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        returncode = run_commands(found, out, check.name, ports)
    except CheckFailed as failed:
        result.update(status=FAILED, error=str(failed))
    else:
        result.update(outcome(run_dir, returncode, log.read_text(errors="replace"), expectation(check)))
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"[gpu-check] {check.name}: {result['status']}" + (f": {result['error']}" if result.get("error") else ""),
          file=sys.stderr, flush=True)
    return result


def default_out() -> Path:
    return Path("outputs") / "gpu-check" / time.strftime("%Y-%m-%d_%H-%M-%S")


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlhf.gpu_check",
                                     description="Check the platform on this GPU host (see the module's docstring).")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the model, run dirs, logs and gpu_check.json go "
                             "(default: outputs/gpu-check/<date>_<time>)")
    parser.add_argument("--only", default=None, help="comma-separated check names (all of them by default)")
    parser.add_argument("--list", action="store_true", help="print the plan for this machine and exit")
    parser.add_argument("--cpu", action="store_true",
                        help="run the checks that have a CPU option on this machine's CPU (cpu, cpu_2proc, "
                             "cpu_2proc_fsdp), on a small model: the checking itself, where no GPU is")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    out = (args.out or default_out()).resolve()
    try:
        machine, no_gpu = this_machine()
        if args.cpu:
            machine = Machine(0, machine.packages, cpu=True)
        planned = plan(machine, args.only)
        if args.list:
            print(render_plan(planned, machine, out))
            return 0
        if machine.gpus == 0 and not machine.cpu:
            raise RlhfError(f"no GPU to check: {no_gpu}; run python -m rlhf.gpu_check on a GPU host "
                            "(--list prints its plan anywhere; --cpu runs the checks on the CPU options)")
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    model: dict[str, Any] = {}
    if any(entry.skip is None for entry in planned):
        print(f"[gpu-check] building the checks' model in {out / MODEL_DIR}", file=sys.stderr, flush=True)
        model = build_model(out / MODEL_DIR, **(CPU_SHAPE if machine.cpu else {}))
    facts = machine_facts(machine)
    results: list[dict] = []
    for entry in planned:
        results.append(run_check(entry, machine, out))
        (out / JSON_NAME).write_text(json.dumps(report(facts, model, results), indent=2) + "\n")
    print(render_table(results))
    print(f"details: {out / JSON_NAME}")
    return exit_code(results)
