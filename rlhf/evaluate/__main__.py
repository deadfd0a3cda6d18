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
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rlhf import rundir
from rlhf.errors import ConfigError, RlhfError

log = logging.getLogger("rlhf")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        run, policy_dir, out = target_config(args.target, args.overrides, args.out)
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


def target_config(target: str, overrides: list[str], out: str | None) -> tuple[Any, Path | str, Path]:
    """The validated run the stage reads, the policy to load, and the output dir."""
    from omegaconf import OmegaConf

    from rlhf.config.validate import validate
    from rlhf.naming import overrides_suffix

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: an override is key=value (e.g. evaluate.seed=1)")
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    suffix = overrides_suffix(",".join(sorted(overrides)))
    path = Path(target).expanduser()
    if not path.exists() and (target.startswith(("/", ".", "~")) or target.count("/") != 1):
        raise RlhfError(f"{target}: no such run dir or model dir (a hub id looks like org/name)")
    if (path / rundir.CONFIG).is_file():
        from rlhf.config.schema import GROUP_SCHEMAS

        groups = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in (*GROUP_SCHEMAS, "method", "evaluate")]
        if groups:
            raise ConfigError(f"{', '.join(groups)}: a run dir keeps the config it trained with, so an override sets "
                              "one of its keys (e.g. evaluate.seed=1, evaluate.prompts=<file>), not a group option; "
                              f"to compose another config, give its policy as a model dir: {path / rundir.MODEL_DIR}")
        if not (path / rundir.MODEL_DIR).is_dir():
            raise RlhfError(f"{path} is a run dir without a saved policy ({rundir.MODEL_DIR}/): it has not finished "
                            f"(status: {rundir.status(path)})")
        config = OmegaConf.create(rundir.read_config(path))
        config = OmegaConf.merge(config, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
        run = forced_on(validate(config))
        return run, path / rundir.MODEL_DIR, Path(out or path / "evaluations" / (stamp.split("/")[1] + suffix))
    if path.exists() and not (path / "config.json").is_file():
        raise RlhfError(f"{target}: neither a run dir (config.yaml) nor a model dir (config.json)")
    from rlhf.config.compose import compose_job

    composed = rundir.resolved_config(compose_job(list(overrides)))
    evaluate = composed.setdefault("evaluate", {})
    evaluate["reference"] = evaluate.get("reference") or composed["model"]["name_or_path"]
    name = str(path.resolve()) if path.is_dir() else target
    if path.is_dir() and not (path / "tokenizer_config.json").is_file() and not composed["model"].get("tokenizer"):
        composed["model"]["tokenizer"] = composed["model"]["name_or_path"]  # a bare checkpoint: the base's
    composed["model"]["name_or_path"] = name
    run = forced_on(validate(composed))
    label = Path(target.rstrip("/")).name
    return run, name, Path(out or Path("outputs/evaluate") / f"{stamp}_{label}{suffix}")


def forced_on(run: Any) -> Any:
    """The stage runs when asked for by name, scorers or not (KL and length need none)."""
    if run.evaluate.enabled is False:
        raise ConfigError("evaluate.enabled=false: nothing to evaluate (leave it unset)")
    run.evaluate = dataclasses.replace(run.evaluate, enabled=True)
    from rlhf.evaluate.checks import check_evaluate

    problems = check_evaluate(run)
    if problems:
        raise ConfigError(problems)
    return run


def evaluate(run: Any, policy_dir: Path | str, out: Path) -> dict[str, Any]:
    from rlhf.evaluate import stage
    from rlhf.models import load_tokenizer
    from rlhf.process import start_process

    start_process(run)
    tokenizer = load_tokenizer(run.model)
    eval_data = None
    if run.evaluate.prompts is None:
        from rlhf.data.pipeline import prepare_data

        eval_data = prepare_data(run, tokenizer).eval
    judge = stage.prepare(run, eval_data, tokenizer)
    if isinstance(policy_dir, Path):
        policy = stage.load_policy(run, policy_dir)
    else:  # the target itself: a model dir or hub id, loaded as the run's model
        from rlhf.models import load_model

        policy = load_model(run.model, run.hardware, "policy")
        policy = policy.to("cuda") if run.hardware.accelerator == "cuda" else policy
    out.mkdir(parents=True, exist_ok=True)
    block = judge.evaluate_policy(policy, stage.Reference(run, policy), out_dir=out)
    record = {"target": str(policy_dir), "generation": block}
    rundir.atomic_write(out / rundir.METRICS, json.dumps(record, indent=2) + "\n")
    return block


def summary(block: dict[str, Any], out: Path) -> str:
    width = max(len("generation/" + name) for name in block["metrics"]) + 2
    lines = [f"{'metric':<{width}} {'mean':>10}  95% CI (over prompts)"]
    for name, value in block["metrics"].items():
        interval = block["intervals"].get(name, {})
        ci = (f"[{interval['ci_low']:.4g}, {interval['ci_high']:.4g}]" if interval.get("ci_low") is not None
              else "no interval")
        lines.append(f"{'generation/' + name:<{width}} {value:>10.4g}  {ci}")
    reference = block.get("reference", {})
    if reference:
        lines.append(f"reference: {reference['model']} (completions {reference.get('completions')})")
    lines.append(f"written: {out / rundir.METRICS}, {out / 'completions.jsonl'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
