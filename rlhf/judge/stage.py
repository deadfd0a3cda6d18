"""The generation eval stage: a policy's completions for the evaluate prompts, scored, judged
against the reference policy's, with the KL between the two and the completions' length.

    stage = prepare(run, eval_data, tokenizer)      # prompts and scorers, before any policy loads
    block = stage.evaluate_policy(policy, Reference(run, policy))  # the `generation` block of metrics.json

Every figure is a mean over the prompts (a prompt's samples averaged first) with its 95%
confidence interval over the prompts: Wilson's score interval for a figure that lives in [0, 1]
(a win rate, a share), Student's t for the others (rlhf.judge.stats.over_prompts). The reference policy's completions
depend only on the reference model, the prompts and the decoding settings, so they are
generated once and kept under `<cache_dir>/generations/`, shared by every job of a sweep that
starts from the same model (as the reference log-probs are).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf.judge import generate, prompts as prompt_rows, scorers as scoring
from rlhf.judge.checks import enabled, judge_name
from rlhf.core.locks import locked
from rlhf.run.files import COMPLETIONS, GENERATION_HISTORY, generation_metrics
from rlhf.judge.paired import figure_range
from rlhf.judge.stats import LENGTH_CONTROL, LEVEL, length_controlled, over_prompts

log = logging.getLogger("rlhf")

KL_ESTIMATOR = ("k1: the mean over the policy's sampled completions of sum_t [log pi(y_t) - log pi_ref(y_t)], "
                "both from logits divided by the sampling temperature; an unbiased estimate of the sequence-level "
                "KL(pi || pi_ref) of the distribution sampled from when top_p=1 (with top_p < 1 the samples come "
                "from the truncated distribution and the estimate is approximate)")
INTERVALS = (f"{LEVEL:.0%} CI of the mean over prompts (a prompt's samples averaged first): a figure in [0, 1] "
             "(win rate, finished, empty) by the Wilson score interval at the effective sample size s^2/n "
             "(Korn-Graubard df correction), so it stays in [0, 1]; the others by Student's t, n-1 degrees of freedom")
WIN_RULE = ("the policy's completion against the reference's for the same prompt and sample index, by the "
            "judge's score: higher wins, equal ties (counted half)")
LENGTH = ("generated tokens per completion, the end-of-sequence token included; empty: the share of completions "
          "with no visible text")


def prepare(run: Any, eval_data: Any, tokenizer: Any) -> Stage | None:
    """The stage of this run (None when it does not run): its prompts read and its scorers
    loaded, so that a missing column or a scorer that cannot load stops the job before the
    policy loads."""
    if not enabled(run):
        return None
    prompts = prompt_rows.load(run.evaluate, eval_data, tokenizer)
    loaded = scoring.load(run, prompts)
    log.info("generation eval: %d prompts from %s; scorers: %s", len(prompts.texts), prompts.source,
             ", ".join(s.name for s in loaded) or "none")
    return Stage(run, prompts, loaded, tokenizer)


class Reference:
    """The reference policy: the policy with its adapter disabled when it has one and no other
    reference is named, else `evaluate.reference` or the run's starting model, loaded once, as a
    frozen copy of the policy (rlhf.models.loading.frozen_copy_dtype: the autocast dtype under
    bf16/fp16, the dtype the policy trained in otherwise), so both sides hold one dtype.
    On a GPU it is there only while it computes: between two mid-training evals it waits on the
    CPU, and `release` frees it when the stage is done with it."""

    def __init__(self, run: Any, policy: Any = None):
        self.run = run
        self.name = run.evaluate.reference or run.model.name_or_path
        self.adapter_of = policy if (policy is not None and run.evaluate.reference is None
                                     and hasattr(policy, "disable_adapter")) else None
        self.loaded = None

    @contextlib.contextmanager
    def model(self):
        if self.adapter_of is not None:
            with self.adapter_of.disable_adapter():
                yield self.adapter_of
            return
        if self.loaded is None:
            import dataclasses

            from rlhf.models.loading import frozen_copy_dtype, load_model

            config = dataclasses.replace(self.run.model, name_or_path=self.name,
                                         revision=None if self.run.evaluate.reference else self.run.model.revision)
            self.loaded = load_model(config, self.run.hardware, "reference policy",
                                     dtype=frozen_copy_dtype(config, self.run.hardware, self.run.peft.adapter))
        with on_device(self.loaded, self.run.hardware):
            yield self.loaded

    def release(self) -> None:
        """Drop the loaded copy (the policy's own adapter-disabled self is the caller's)."""
        self.loaded = None

    def identity(self) -> dict[str, Any]:
        """What the reference's completions depend on, for the cache key."""
        path = Path(str(self.name)).expanduser()
        record: dict[str, Any] = {"name": str(self.name), "dtype": self.run.model.dtype,
                                  "revision": None if self.run.evaluate.reference else self.run.model.revision}
        if path.is_dir():
            record["name"] = str(path.resolve())
            record["files"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()
                                     if p.suffix in (".safetensors", ".bin", ".json"))
        return record


@dataclass
class Side:
    """One policy's completions and what was measured on them."""

    completions: list[Any]
    scores: dict[str, list[float]]

    def lengths(self) -> list[float]:
        return [float(len(c.ids)) for c in self.completions]


class Stage:
    """The generation eval stage of a run, its prompts read and scorers loaded (`prepare`)."""

    def __init__(self, run: Any, prompts: Any, scorers: list[Any], tokenizer: Any):
        self.run, self.prompts, self.scorers, self.tokenizer = run, prompts, scorers, tokenizer
        self.evaluate = run.evaluate
        self.decoding = generate.decoding_of(run.evaluate)
        self.judge = judge_name(run.evaluate) if run.evaluate.win_rate else None

    # ------------------------------------------------------------------------------ the stage

    def evaluate_policy(self, policy: Any, reference: Reference, out_dir: Path | None = None,
            step: int | None = None) -> dict[str, Any]:
        """The stage on one policy.

        Args:
            policy: the policy model to sample from (on its device, in eval mode or not).
            reference: the reference policy, whose completions are shared by every job that
                starts from the same model (cached under cache_dir).
            out_dir: where completions.jsonl goes (None: not written, as mid-training).
            step: the training step of a mid-training eval (None: the end).

        Returns:
            The `generation` block of metrics.json: each figure's mean over prompts (`metrics`),
            its interval (`intervals`), the method of each figure, the reference and the
            decoding settings.
        """
        started = time.perf_counter()
        with self.autocast():
            return self._evaluate(policy, reference, out_dir, step, started)

    def _evaluate(self, policy: Any, reference: Reference, out_dir: Path | None, step: int | None,
                  started: float) -> dict[str, Any]:
        texts = self.prompts.texts
        policy_side = self.side(generate.sample(policy, self.tokenizer, texts, self.decoding))
        needs_reference = self.judge is not None or self.evaluate.kl
        reference_side, cached = None, None
        if needs_reference:
            completions, cached = self.reference_completions(reference)
            reference_side = self.side(completions)
        kl = self.kl(policy, reference, policy_side.completions) if self.evaluate.kl else None
        wins = self.outcomes(policy_side, reference_side) if self.judge is not None else None
        block = self.block(policy_side, reference_side, kl, wins, cached, reference)
        block.update(step=step, seconds=round(time.perf_counter() - started, 2))
        if out_dir is not None and step is None:
            self.write_completions(Path(out_dir) / COMPLETIONS, policy_side, reference_side, kl, wins)
            block["completions"] = COMPLETIONS
        shown = ", ".join(f"{k} {v:.4g}" for k, v in block["metrics"].items() if not k.startswith("reference/"))
        log.info("generation eval%s: %s (%.1fs)", "" if step is None else f" at step {step}", shown,
                 block["seconds"])
        return block

    def autocast(self):
        """The stage's forward passes in the run's autocast dtype (hardware.precision bf16/fp16), as
        training computed, for the policy and the reference alike (their weights share a dtype:
        the policy as saved, the reference a frozen copy); the output layer of the log-probs stays
        fp32 (rlhf.trl.fused_logps). Without autocast (fp32), nothing changes."""
        import torch

        from rlhf.models.loading import PRECISION_DTYPES, torch_dtype

        dtype = PRECISION_DTYPES.get(self.run.hardware.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda" if self.run.hardware.accelerator == "cuda" else "cpu", dtype=torch_dtype(dtype))

    def side(self, completions: list[Any]) -> Side:
        """The completions with each scorer's scores; a reward model is on the run's GPU only
        while it scores (it waits on the CPU, where it was loaded)."""
        scores = {}
        for scorer in self.scorers:
            with on_device(scorer.model, self.run.hardware):
                scores[scorer.name] = scoring.score(scorer, self.prompts, completions, self.evaluate.batch_size)
        return Side(completions, scores)

    def reference_completions(self, reference: Reference) -> tuple[list[Any], dict[str, str]]:
        """The reference policy's completions, generated once per reference model, prompts and
        decoding, and kept in the cache for every job that asks the same; and whether this call
        computed or reused them, and where."""
        from importlib import metadata

        from rlhf.data.cache import tokenizer_fingerprint

        record = {"reference": reference.identity(), "tokenizer": tokenizer_fingerprint(self.tokenizer),
                  "prompts": hashlib.blake2b("\x00".join(self.prompts.texts).encode(), digest_size=16).hexdigest(),
                  "decoding": self.decoding, "device": self.run.hardware.accelerator,
                  "versions": {p: metadata.version(p) for p in ("torch", "transformers")}}
        key = hashlib.blake2b(json.dumps(record, sort_keys=True).encode(), digest_size=12).hexdigest()
        root = Path(self.run.cache_dir).expanduser() / "generations"
        path = root / key / COMPLETIONS
        with locked(root / f"{key}.lock"):
            if path.is_file():
                completions = [generate.Completion(**json.loads(line)) for line in path.read_text().splitlines()]
                how = "reused"
            else:
                with reference.model() as model:
                    completions = generate.sample(model, self.tokenizer, self.prompts.texts, self.decoding)
                path.parent.mkdir(parents=True, exist_ok=True)
                staging = path.with_name(f".{COMPLETIONS}.{os.getpid()}")
                staging.write_text("".join(json.dumps(asdict(c)) + "\n" for c in completions))
                (path.parent / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True))
                os.replace(staging, path)
                how = "computed"
        log.info("reference completions %s: %s", how, path)
        return completions, {"completions": how, "cache": str(path)}

    def kl(self, policy: Any, reference: Reference, completions: list[Any]) -> list[float]:
        args = (self.tokenizer, self.prompts.texts, completions, self.evaluate.temperature, self.evaluate.batch_size)
        mine = generate.sequence_logps(policy, *args)
        with reference.model() as model:
            theirs = generate.sequence_logps(model, *args)
        return [a - b for a, b in zip(mine, theirs)]

    def outcomes(self, policy: Side, reference: Side) -> list[float]:
        """Per completion: 1 when the policy's beats the reference's, 0.5 on a tie, 0 when it
        loses (nan when the judge gave either no score)."""
        out = []
        for a, b in zip(policy.scores[self.judge], reference.scores[self.judge]):
            out.append(math.nan if math.isnan(a) or math.isnan(b) else 1.0 if a > b else 0.5 if a == b else 0.0)
        return out

    # ------------------------------------------------------------------------------ results

    def per_prompt(self, values: list[float], completions: list[Any]) -> list[float]:
        """Each prompt's mean over its samples (prompts whose every value is missing left out)."""
        groups: dict[int, list[float]] = {}
        for value, completion in zip(values, completions):
            if not math.isnan(value):
                groups.setdefault(completion.prompt_index, []).append(value)
        return [math.fsum(v) / len(v) for _, v in sorted(groups.items())]

    def block(self, policy: Side, reference: Side | None, kl: list[float] | None, wins: list[float] | None,
              cached: dict | None, ref: Reference) -> dict[str, Any]:
        series: dict[str, list[float]] = dict(policy.scores)
        if wins is not None:
            series["win_rate"] = wins
        if kl is not None:
            series["kl"] = kl
        series["length"] = policy.lengths()
        series["finished"] = [float(c.finished) for c in policy.completions]
        series["empty"] = [float(not c.text.strip()) for c in policy.completions]
        if reference is not None:
            series.update({f"reference/{k}": v for k, v in reference.scores.items()})
            series["reference/length"] = reference.lengths()
        stats = {}
        for name, values in series.items():
            completions = reference.completions if name.startswith("reference/") else policy.completions
            stats[name] = over_prompts(self.per_prompt(values, completions),
                                       figure_range(name.removeprefix("reference/")))
        block: dict[str, Any] = {
            "metrics": {name: s["mean"] for name, s in stats.items() if s["mean"] is not None},
            "intervals": {name: {"n": s["n"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}
                          for name, s in stats.items()},
            "interval_method": INTERVALS,
            "prompts": {"count": len(self.prompts.texts), "source": self.prompts.source,
                        "samples_per_prompt": self.evaluate.samples_per_prompt},
            "decoding": self.decoding,
            "scorers": [{"name": s.name, "kind": s.kind, "source": s.source} for s in self.scorers],
            "length": LENGTH,
        }
        if wins is not None and reference is not None:
            controlled = length_controlled(wins, policy.lengths(), reference.lengths())
            block["metrics"]["length_controlled_win_rate"] = controlled["length_controlled"]
            block["length_controlled"] = {"win_rate": controlled["length_controlled"],
                                          "length_coefficient": controlled["length_coefficient"],
                                          "note": controlled["note"], "method": LENGTH_CONTROL}
        if wins is not None:
            block["win_rate"] = {"judge": self.judge, "wins": sum(w == 1.0 for w in wins),
                                 "ties": sum(w == 0.5 for w in wins), "losses": sum(w == 0.0 for w in wins),
                                 "rule": WIN_RULE}
        if kl is not None:
            block["kl_estimator"] = KL_ESTIMATOR
        if reference is not None:
            block["reference"] = {"model": str(ref.name), **(cached or {})}
        if self.prompts.group is not None:
            block["groups"] = self.by_group({k: v for k, v in series.items() if not k.startswith("reference/")},
                                            policy.completions)
        return block

    def by_group(self, series: dict[str, list[float]], completions: list[Any]) -> dict[str, Any]:
        """What the average hides: each figure per value of the prompts' grouping column.

        Args:
            series: each figure's value per completion (the policy's).
            completions: the policy's completions, in the order of the values.

        Returns:
            {"column", "figures": {value: {"prompts": n, name: the mean over the group's prompts}},
            "all_empty": the values whose every completion is empty}, each such group also said
            in the log as a warning (the average can rise while one group collapses).
        """
        column = self.prompts.group
        value_of = {i: str(row.get(column)) for i, row in enumerate(self.prompts.rows)}
        members: dict[str, list[int]] = {}
        for position, completion in enumerate(completions):
            members.setdefault(value_of[completion.prompt_index], []).append(position)
        figures: dict[str, dict[str, Any]] = {}
        for value, positions in sorted(members.items()):
            chosen = [completions[i] for i in positions]
            entry: dict[str, Any] = {"prompts": len({c.prompt_index for c in chosen})}
            for name, values in series.items():
                means = self.per_prompt([values[i] for i in positions], chosen)
                if means:
                    entry[name] = math.fsum(means) / len(means)
            figures[value] = entry
        all_empty = [value for value, entry in figures.items() if entry.get("empty") == 1.0]
        for value in all_empty:
            log.warning("generation eval: every completion for the prompts with %s=%s is empty (%d prompts)",
                        column, value, figures[value]["prompts"])
        return {"column": column, "figures": figures, "all_empty": all_empty}

    def write_completions(self, path: Path, policy: Side, reference: Side | None, kl: list[float] | None,
                          wins: list[float] | None) -> None:
        lines = []
        for i, c in enumerate(policy.completions):
            prompt_row = self.prompts.rows[c.prompt_index]
            row: dict[str, Any] = {"prompt_index": c.prompt_index, "sample": c.sample,
                                   "prompt": prompt_row[self.prompts.column],
                                   "columns": group_columns(prompt_row, self.prompts.column),
                                   "completion": c.text, "tokens": len(c.ids), "finished": c.finished,
                                   "scores": {k: v[i] for k, v in policy.scores.items()}}
            if kl is not None:
                row["kl"] = kl[i]
            if reference is not None:
                r = reference.completions[i]
                row.update(reference_completion=r.text, reference_tokens=len(r.ids),
                           reference_scores={k: v[i] for k, v in reference.scores.items()})
            if wins is not None:
                row["win"] = wins[i]
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        staging = path.with_name(f".{path.name}.tmp")
        staging.write_text("".join(lines), encoding="utf-8")
        os.replace(staging, path)

    # ------------------------------------------------------------------------------ mid-training

    def callback(self, run_dir: Path, policy_reference: Any, also_at: int | None = None) -> Any:
        """A TrainerCallback that runs the stage on rank 0 every `evaluate.every_n_steps`
        optimizer steps (0: never) and at step `also_at` (a halving sweep's rung), and appends
        its figures to generation_history.jsonl (and the train log). The last step is the
        end-of-run stage's."""
        from transformers import TrainerCallback

        stage, every = self, self.evaluate.every_n_steps

        def due(step: int, last: int) -> bool:
            return step != last and ((every > 0 and step % every == 0) or step == also_at)

        class GenerationEval(TrainerCallback):
            reference: Reference | None = None

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if not state.is_world_process_zero or not due(state.global_step, state.max_steps):
                    return
                if self.reference is None:
                    self.reference = policy_reference(model)
                block = stage.evaluate_policy(model, self.reference, step=state.global_step)
                with open(run_dir / GENERATION_HISTORY, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, "time": time.time(),
                                        **generation_metrics(block)}) + "\n")

        return GenerationEval()


GROUP_VALUE_CHARS = 64


def group_columns(row: dict[str, Any], prompt_column: str) -> dict[str, Any]:
    """The prompt row's other columns that can group prompts (a `category`, a task name): short
    strings, numbers and booleans, for the report's per-group figures."""
    return {k: v for k, v in row.items() if k != prompt_column and (
        isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= GROUP_VALUE_CHARS))}


def load_policy(run: Any, model_dir: str | Path) -> Any:
    """A trained policy from its saved directory: full weights, or the base model of the run
    with the saved adapter on it."""
    import dataclasses

    from rlhf.models.loading import load_model

    model_dir = Path(model_dir)
    # A QLoRA run's base loads quantised, as it trained (4-bit on this process's GPU): a 70B base
    # in bf16 would not fit the one GPU the stage has. A LoRA base: the checkpoint's dtype.
    adapter = "qlora" if run.peft.adapter == "qlora" else None
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        hardware = dataclasses.replace(run.hardware, distributed="none") if adapter else run.hardware
        base = load_model(run.model, hardware, "base model", adapter=adapter)
        policy = PeftModel.from_pretrained(base, str(model_dir))
    else:
        policy = load_model(dataclasses.replace(run.model, name_or_path=str(model_dir), revision=None),
                            run.hardware, "policy")
    if run.hardware.accelerator == "cuda" and adapter is None:  # bitsandbytes placed its 4-bit model itself
        policy = policy.to("cuda")
    return policy


@contextlib.contextmanager
def on_device(model: Any, hardware: Any):
    """`model` on the run's GPU for the duration, back on the CPU afterwards (a CPU run, or no
    model: nothing moves)."""
    if model is None or hardware.accelerator != "cuda":
        yield model
        return
    model.to("cuda")
    try:
        yield model
    finally:
        model.to("cpu")
