"""python -m rlhf.gpu_check [--out DIR] [--only NAME,...] [--list]      (make gpu-check)

The platform on a GPU host, checked by one command (under 10 minutes on one GPU). It builds
its own model, nothing from the hub: a Qwen2-architecture causal LM of ~76M random weights in
bf16 with the shipped tiny ChatML tokenizer. Then each check runs through the real platform,
`python -m rlhf.train <overrides>` in a subprocess into its own run dir under --out, and
passes when the run finished (SUCCESS) and its saved model (or adapter) loads back and gives
finite logits. Which checks run depends on the machine (`plan`):

- one GPU: DPO in bf16, LoRA DPO, QLoRA DPO (bitsandbytes installed), GRPO generating with
  transformers, GRPO with vLLM colocated (vllm installed);
- two or more: GRPO against a vLLM server on GPU 1 (`rlhf.vllm_serve`, started first with
  the same overrides, hardware=gpu_vllm) training on GPU 0; DPO with one process per GPU
  over DDP, FSDP, and DeepSpeed ZeRO-2 and ZeRO-3 (deepspeed installed).

It writes <out>/gpu_check.json and prints a table: each check passed, skipped (why) or failed
(the last line of its run's failure), with its step time (the median interval between logged
training steps) and rank 0's peak GPU memory (torch's allocator, from the run's metrics.json).
Exit code 0 when no check failed, 1 when one did, 2 when none could run (no GPU, a bad option).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config.checks import DEEPSPEED_EXTRA, cuda_driver_present
from rlhf.config.tree import REPO
from rlhf.core.errors import RlhfError, did_you_mean
from rlhf.core.versions import installed_versions

# Optional packages a check needs, and how to install each.
INSTALL = {
    "bitsandbytes": "pip install bitsandbytes",
    "vllm": "pip install -e '.[vllm]'",
    "deepspeed": DEEPSPEED_EXTRA,
}

# The checks' model: Qwen2 as Qwen2.5 builds it (grouped-query attention, q/k/v biases, tied
# embeddings) at ~76M parameters, enough for bf16 kernels, sharding and vLLM to do real work.
MODEL_SHAPE = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
               "num_key_value_heads": 4, "max_position_embeddings": 2048}
MODEL_DIR = "model"
STEPS = 10
TRAIN_TIMEOUT_S = 1200
SERVER_TIMEOUT_S = 600
JSON_NAME = "gpu_check.json"

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    overrides: tuple[str, ...]
    gpus: int = 1  # GPUs the check needs at least
    needs: tuple[str, ...] = ()  # packages of INSTALL it needs
    per_gpu: bool = False  # one training process per GPU of the machine
    server: bool = False  # trains against rlhf.vllm_serve, started first with the same overrides


DPO = ("method=dpo",)
GRPO = ("method=grpo", "method.max_completion_length=32")
VLLM = ("method.use_vllm=true", "vllm.max_model_len=512")

CHECKS = (
    Check("dpo_bf16", "full DPO, bf16, one GPU", ("hardware=gpu", *DPO)),
    Check("lora_dpo", "LoRA DPO (reference: the adapter switched off)", ("hardware=gpu", *DPO, "peft=lora")),
    Check("qlora_dpo", "QLoRA DPO (4-bit NF4 base)", ("hardware=gpu", *DPO, "peft=qlora"), needs=("bitsandbytes",)),
    Check("grpo_transformers", "GRPO generating with transformers", ("hardware=gpu", *GRPO)),
    Check("grpo_vllm_colocate", "GRPO generating with vLLM in the training process",
          ("hardware=gpu", *GRPO, *VLLM, "method.vllm_mode=colocate", "vllm.gpu_memory_utilization=0.3"),
          needs=("vllm",)),
    Check("grpo_vllm_server", "GRPO against a vLLM server (rlhf.vllm_serve) on GPU 1, training on GPU 0",
          ("hardware=gpu_vllm", *GRPO, *VLLM, "method.vllm_mode=server", "vllm.gpu_memory_utilization=0.5"),
          gpus=2, needs=("vllm",), server=True),
    Check("ddp", "DPO, DDP, one process per GPU", ("hardware=gpu_ddp_8", *DPO), gpus=2, per_gpu=True),
    Check("fsdp", "DPO, FSDP full shard, one process per GPU", ("hardware=gpu_fsdp_8", *DPO), gpus=2, per_gpu=True),
    Check("zero2", "DPO, DeepSpeed ZeRO-2, one process per GPU", ("hardware=gpu_zero2_8", *DPO), gpus=2,
          needs=("deepspeed",), per_gpu=True),
    Check("zero3", "DPO, DeepSpeed ZeRO-3, one process per GPU", ("hardware=gpu_zero3_8", *DPO), gpus=2,
          needs=("deepspeed",), per_gpu=True),
)


@dataclass(frozen=True)
class Machine:
    """What decides the plan: the GPUs torch sees and which optional packages are installed."""

    gpus: int
    packages: frozenset[str] = frozenset()


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
    if machine.gpus < check.gpus:
        return f"needs {check.gpus} GPU{'s' if check.gpus > 1 else ''}, this machine has {machine.gpus}"
    missing = [p for p in check.needs if p not in machine.packages]
    if missing:
        return "; ".join(f"{p} is not installed ({INSTALL[p]})" for p in missing)
    return None


def plan(machine: Machine, only: str | None = None) -> list[Planned]:
    return [Planned(check, why_skipped(check, machine)) for check in select(only)]


def overrides(check: Check, machine: Machine, out: Path, ports: tuple[int, int] = (8000, 51216)) -> list[str]:
    """The check's `rlhf.train` overrides: its own, the built model, a few steps, its run dir
    under `out`. `ports`: the vLLM server's HTTP and weight-sync ports (server checks)."""
    found = list(check.overrides)
    if check.gpus == 1:  # GPU 0 alone: a single process seeing several would train with nn.DataParallel
        found.append("hardware.train_gpus=[0]")
    if check.per_gpu:
        found += [f"hardware.processes_per_node={machine.gpus}", f"hardware.gpus_per_node={machine.gpus}"]
    if check.server:
        found += [f"vllm.port={ports[0]}", f"vllm.group_port={ports[1]}"]
    # A modest learning rate: the check is that the platform runs, not what it learns.
    return [*found, "model=tiny", f"model.name_or_path={out / MODEL_DIR}", "model.dtype=bfloat16",
            "model.attn_implementation=sdpa", f"method.max_steps={STEPS}", "method.logging_steps=1",
            "method.learning_rate=1.0e-05", f"cache_dir={out / 'cache'}", f"hydra.run.dir={out / check.name}"]


def commands(check: Check, machine: Machine, out: Path, ports: tuple[int, int] = (8000, 51216)) -> dict[str, list[str]]:
    """`train`: the training command; `server` (server checks): the vLLM server's, started
    first with the same overrides but Hydra's own (it composes the config, runs no job)."""
    args = overrides(check, machine, out, ports)
    found = {"train": [sys.executable, "-m", "rlhf.train", *args]}
    if check.server:
        found["server"] = [sys.executable, "-m", "rlhf.vllm_serve", *[a for a in args if not a.startswith("hydra.")]]
    return found


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


def outcome(run_dir: Path, returncode: int, log_text: str = "") -> dict[str, Any]:
    """What a finished `rlhf.train` left: passed (exit 0 and SUCCESS) or failed with the last line
    of its failure (the run dir's FAILED, else the command's own output), its step time and
    peak GPU memory when it logged them."""
    from rlhf.run import rundir

    run_dir = Path(run_dir)
    history_path = run_dir / rundir.HISTORY
    history = [json.loads(line) for line in history_path.read_text().splitlines() if line.strip()] \
        if history_path.is_file() else []
    metrics = rundir.read_metrics(run_dir) if (run_dir / rundir.METRICS).is_file() else {}
    found: dict[str, Any] = {"step_seconds": step_seconds(history), "peak_gpu_mib": metrics.get("peak_gpu_memory_mib"),
                             "error": None}
    if returncode == 0 and (run_dir / rundir.SUCCESS).is_file():
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


def render_table(results: list[dict], note_width: int = 160) -> str:
    lines = ["| check | result | step s | peak GPU MiB | note |", "|---|---|---|---|---|"]
    for r in results:
        note = r.get("reason") or r.get("error") or ""
        if len(note) > note_width:
            note = note[:note_width - 3] + "..."
        note = note.replace("|", "\\|")
        lines.append(f"| {r['name']} | {r['status']} | {_cell(r.get('step_seconds'), 3)} | "
                     f"{_cell(r.get('peak_gpu_mib'))} | {note} |")
    counts = summary(results)
    lines.append(f"\n{counts[PASSED]} of {len(results)} checks passed, {counts[FAILED]} failed, "
                 f"{counts[SKIPPED]} skipped")
    return "\n".join(lines)


def render_plan(planned: list[Planned], machine: Machine, out: Path) -> str:
    packages = ", ".join(f"{p} {'yes' if p in machine.packages else 'no'}" for p in INSTALL)
    lines = [f"GPU checks for this machine: {machine.gpus} GPU{'s' if machine.gpus != 1 else ''}; {packages}"]
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

    return {"gpus": machine.gpus, "gpu_names": names, "cuda": torch.version.cuda,
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


def load_back(model_dir: Path) -> str | None:
    """Why the saved model does not load back, or None when it does: a full model must load
    with every weight from the files (none missing, unexpected or of another shape), an adapter
    with its base, and either must give finite logits. On the CPU: this process uses no GPU."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the table is this process's output
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return f"no model dir {model_dir}"
    try:
        if (model_dir / "adapter_config.json").is_file():
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                               output_loading_info=True)
            wrong = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
                {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {})
            if wrong:
                return "weights not as the model expects them: " + "; ".join(
                    f"{kind} {', '.join(map(str, sorted(keys, key=str)[:3]))}" for kind, keys in wrong.items())
        with torch.no_grad():
            logits = model(torch.arange(8).unsqueeze(0) % model.config.vocab_size).logits
    except Exception as error:  # whatever loading raised is the finding
        return last_line(f"{type(error).__name__}: {error}") or type(error).__name__
    if not torch.isfinite(logits).all():
        return "its logits are not finite"
    return None


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


def stop(process: subprocess.Popen | None, grace: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_check(planned: Planned, machine: Machine, out: Path) -> dict[str, Any]:
    check = planned.check
    result: dict[str, Any] = {"name": check.name, "what": check.what}
    if planned.skip is not None:
        return {**result, "status": SKIPPED, "reason": planned.skip}
    from rlhf.cluster.distributed import free_port
    from rlhf.cluster.vllm_server import wait_healthy

    ports = (free_port(), free_port()) if check.server else (8000, 51216)
    found = commands(check, machine, out, ports)
    run_dir, log = out / check.name, out / f"{check.name}.log"
    result.update(commands=found, run_dir=str(run_dir), log=str(log))
    print(f"[gpu-check] {check.name}: {check.what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    server = None
    try:
        if "server" in found:
            server_log = out / f"{check.name}.server.log"
            server = start(found["server"], server_log, out)
            try:
                wait_healthy(f"http://127.0.0.1:{ports[0]}/health", SERVER_TIMEOUT_S, server)
            except RlhfError as error:
                return {**result, "status": FAILED, "error": f"{error}: {last_line(server_log.read_text())}",
                        "seconds": round(time.monotonic() - started, 1)}
        process = start(found["train"], log, out)
        try:
            returncode = process.wait(timeout=TRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {**result, "status": FAILED, "error": f"did not finish within {TRAIN_TIMEOUT_S} s; see {log}",
                    "seconds": round(time.monotonic() - started, 1)}
        finally:
            stop(process)  # on a timeout or Ctrl-C: its session does not get the terminal's signal
    finally:
        stop(server)
    result.update(outcome(run_dir, returncode, log.read_text(errors="replace")),
                  seconds=round(time.monotonic() - started, 1))
    if result["status"] == PASSED:
        problem = load_back(run_dir / MODEL_DIR)
        if problem:
            result.update(status=FAILED, error=f"the saved model does not load back: {problem}")
    print(f"[gpu-check] {check.name}: {result['status']}" + (f": {result['error']}" if result.get("error") else ""),
          file=sys.stderr, flush=True)
    return result


def default_out() -> Path:
    return Path("outputs") / "gpu-check" / time.strftime("%Y-%m-%d_%H-%M-%S")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.gpu_check",
                                     description="Check the platform on this GPU host (see the module's docstring).")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the model, run dirs, logs and gpu_check.json go "
                             "(default: outputs/gpu-check/<date>_<time>)")
    parser.add_argument("--only", default=None, help="comma-separated check names (all of them by default)")
    parser.add_argument("--list", action="store_true", help="print the plan for this machine and exit")
    args = parser.parse_args(argv)
    out = (args.out or default_out()).resolve()
    try:
        machine, no_gpu = this_machine()
        planned = plan(machine, args.only)
        if args.list:
            print(render_plan(planned, machine, out))
            return 0
        if machine.gpus == 0:
            raise RlhfError(f"no GPU to check: {no_gpu}; run python -m rlhf.gpu_check on a GPU host "
                            "(--list prints its plan anywhere)")
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    model: dict[str, Any] = {}
    if any(entry.skip is None for entry in planned):
        print(f"[gpu-check] building the checks' model in {out / MODEL_DIR}", file=sys.stderr, flush=True)
        model = build_model(out / MODEL_DIR)
    facts = machine_facts(machine)
    results: list[dict] = []
    for entry in planned:
        results.append(run_check(entry, machine, out))
        (out / JSON_NAME).write_text(json.dumps(report(facts, model, results), indent=2) + "\n")
    print(render_table(results))
    print(f"details: {out / JSON_NAME}")
    return exit_code(results)
