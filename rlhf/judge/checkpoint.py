"""The generation eval stage on a saved checkpoint: the Python side of `python -m rlhf.evaluate`
(whose command line, in rlhf/evaluate.py, composes the run and names the policy). The same
prompts, decoding and scorers as the end of training, so a trained run and its baseline are
scored alike.

    block = evaluate(forced_on(run), policy_dir, out)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rlhf.core.errors import ConfigError
from rlhf.judge.checks import check_evaluate
from rlhf.run import rundir


def forced_on(run: Any) -> Any:
    """The stage runs when asked for by name, scorers or not (KL and length need none)."""
    if run.evaluate.enabled is False:
        raise ConfigError("evaluate.enabled=false: nothing to evaluate (leave it unset)")
    run.evaluate = dataclasses.replace(run.evaluate, enabled=True)
    problems = check_evaluate(run)
    if problems:
        raise ConfigError(problems)
    return run


def evaluate(run: Any, policy_dir: Path | str, out: Path) -> dict[str, Any]:
    """The generation eval stage on a saved policy, its results written to `out`, in a process
    set up for the run (rlhf.job.process.start_process).

    Args:
        run: the validated run whose `evaluate` block, data, model and hardware the stage reads
            (made to run by `forced_on`).
        policy_dir: a run's saved policy (a Path: loaded as the stage loads a trained policy,
            an adapter on its base included), or a model dir or hub id (a str: loaded as the
            run's model).
        out: the directory that receives metrics.json (`target` and the `generation` block) and
            completions.jsonl; made if missing.

    Returns:
        The `generation` block: each figure's mean over prompts, its interval, the reference.
    """
    from rlhf.judge import stage
    from rlhf.models.loading import load_tokenizer

    tokenizer = load_tokenizer(run.model)
    eval_data = None
    if run.evaluate.prompts is None:
        from rlhf.data.cache import prepare_data

        eval_data = prepare_data(run, tokenizer).eval
    judge = stage.prepare(run, eval_data, tokenizer)
    if isinstance(policy_dir, Path):
        policy = stage.load_policy(run, policy_dir)
    else:  # the target itself: a model dir or hub id, loaded as the run's model
        from rlhf.models.loading import load_model

        policy = load_model(run.model, run.hardware, "policy")
        policy = policy.to("cuda") if run.hardware.accelerator == "cuda" else policy
    out.mkdir(parents=True, exist_ok=True)
    block = judge.evaluate_policy(policy, stage.Reference(run, policy), out_dir=out)
    record = {"target": str(policy_dir), "generation": block}
    rundir.atomic_write(out / rundir.METRICS, json.dumps(record, indent=2) + "\n")
    return block


def summary(block: dict[str, Any], out: Path) -> str:
    """The figures of a `generation` block with their intervals, one line each, and where they
    were written."""
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
    lines.append(f"written: {out / rundir.METRICS}, {out / rundir.COMPLETIONS}")
    return "\n".join(lines)
