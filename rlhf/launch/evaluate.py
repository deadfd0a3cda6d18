"""python -m rlhf.evaluate <run dir | model dir | hub id> [key=value ...] [--out DIR]

The generation eval stage on any checkpoint, the untrained base model included: the same
prompts, decoding and scorers as the end of training, so a trained run and its baseline are
scored alike. For a run dir, its own config (config.yaml) with the overrides on top, its saved
policy (`model/`) and its reference; for a model dir or hub id, the default config composed
with the overrides (group choices such as `dataset=...` included), the target as the policy,
and the composed `model.name_or_path` as the reference (so `python -m rlhf.evaluate
outputs/.../model` judges against the starting model, and the base model against itself).

Writes `metrics.json` (the `generation` block) and `completions.jsonl` to --out (default:
`<run dir>/evaluations/<time>` for a run dir, `outputs/evaluate/<date>/<time>_<name>` else),
and prints the figures with their intervals.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rlhf.core.errors import ConfigError, RlhfError
from rlhf.job.process import start_process
from rlhf.judge.checkpoint import evaluate, forced_on, summary
from rlhf.run import rundir

log = logging.getLogger("rlhf")


def main(argv: list[str] | None = None) -> None:
    """The command: the run and policy the target names, the stage on it, its figures printed."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        run, policy_dir, out = target_config(args.target, args.overrides, args.out)
        start_process(run)
        block = evaluate(run, policy_dir, out)
    except RlhfError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ConfigError) else 1)  # as rlhf.train: 2 for a config it refuses
    print(summary(block, out))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlhf.evaluate", description=__doc__.splitlines()[0],
                                     epilog="e.g. python -m rlhf.evaluate rlhf/assets/models/tiny-chatml "
                                            "evaluate.seed=1")
    parser.add_argument("target", help="a run dir (config.yaml and model/), a model dir, or a hub id")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (evaluate.*, dataset=..., ...)")
    parser.add_argument("--out", help="where metrics.json and completions.jsonl go")
    return parser.parse_args(argv)


def check_hub_target(target: str) -> None:
    """A target that is no local directory must be a hub model id that can be loaded: written
    org/name (not a path), with the hub online or the model in the local hub cache. Otherwise one
    message saying what was looked for where, before any model loads."""
    from rlhf.core import hub
    from rlhf.rewards.sources import looks_like_path

    local = "Give a run dir (config.yaml and model/) or a model dir (config.json)"
    if looks_like_path(target) or target.count("/") != 1:
        raise RlhfError(f"{target}: no such run dir or model dir here (a hub model id looks like org/name). {local}")
    state = hub.state()
    if not state.online and not hub.cached(target):
        raise RlhfError(f"{target}: no such run dir or model dir here, and as a hub model id it cannot be loaded: "
                        f"{state.why}, and the local hub cache holds no copy. {local}")


def one_process(config: dict) -> dict:
    """`config` with its hardware reduced to the one process the stage runs in (on one GPU for a
    cuda run): a run dir of 8 GPUs under FSDP is evaluated by one process, which would otherwise
    ask for the 8 GPUs the run trained on (rlhf.cluster.devices) and load as a rank of a
    strategy that has no other ranks. Precision and accelerator stay the run's."""
    hardware = config.setdefault("hardware", {})
    gpus = 1 if hardware.get("accelerator") == "cuda" else 0
    if (hardware.get("nodes", 1), hardware.get("processes_per_node", 1)) != (1, 1) or hardware.get("vllm_gpus"):
        log.info("evaluating in one process%s (the run's hardware has %s node(s) x %s process(es))",
                 " on one GPU" if gpus else "", hardware.get("nodes", 1), hardware.get("processes_per_node", 1))
    hardware.update(nodes=1, processes_per_node=1, distributed="none", gpus_per_node=gpus, train_gpus=None,
                    vllm_gpus=None)
    return config


def target_config(target: str, overrides: list[str], out: str | None) -> tuple[Any, Path | str, Path]:
    """The validated run the stage reads, the policy to load, and the output dir."""
    from omegaconf import OmegaConf

    from rlhf.config.validate import validate
    from rlhf.run.naming import overrides_suffix

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: an override is key=value (e.g. evaluate.seed=1)")
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    suffix = overrides_suffix(",".join(sorted(overrides)))
    path = Path(target).expanduser()
    if not path.exists():
        check_hub_target(target)
    if (path / rundir.CONFIG).is_file():
        from rlhf.config.schema import GROUP_SCHEMAS

        groups = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in (*GROUP_SCHEMAS, "method", "evaluate")]
        if groups:
            raise ConfigError(f"{', '.join(groups)}: a run dir keeps the config it trained with, so an override sets "
                              "one of its keys (e.g. evaluate.seed=1, evaluate.prompts=<file>), not a group option; "
                              f"to compose another config, give its policy as a model dir: {path / rundir.MODEL_DIR}")
        if not (path / rundir.MODEL_DIR).is_dir():
            failed = (f": it failed, {rundir.failure(path)}" if rundir.status(path) == rundir.FAILED_STATUS
                      else f" (status: {rundir.status(path)})")
            raise RlhfError(f"{path} is a run dir without a saved policy ({rundir.MODEL_DIR}/): it has not "
                            f"finished{failed}")
        config = OmegaConf.create(rundir.read_config(path))
        config = OmegaConf.merge(config, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
        run = forced_on(validate(one_process(OmegaConf.to_container(config, resolve=True))))
        return run, path / rundir.MODEL_DIR, Path(out or path / rundir.EVALUATIONS / (stamp.split("/")[1] + suffix))
    if path.exists() and not (path / "config.json").is_file():
        raise RlhfError(f"{target}: neither a run dir (config.yaml) nor a model dir (config.json)")
    from rlhf.launch.compose import compose_job, resolved_config

    composed = resolved_config(compose_job(list(overrides)))
    evaluate = composed.setdefault("evaluate", {})
    evaluate["reference"] = evaluate.get("reference") or composed["model"]["name_or_path"]
    name = str(path.resolve()) if path.is_dir() else target
    if path.is_dir() and not (path / "tokenizer_config.json").is_file() and not composed["model"].get("tokenizer"):
        composed["model"]["tokenizer"] = composed["model"]["name_or_path"]  # a bare checkpoint: the base's
    composed["model"]["name_or_path"] = name
    run = forced_on(validate(one_process(composed)))
    label = Path(target.rstrip("/")).name
    return run, name, Path(out or Path("outputs/evaluate") / f"{stamp}_{label}{suffix}")
