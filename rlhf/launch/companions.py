"""Companion options: config options chosen after another group's option (conf/config.yaml's
defaults: `evaluate: ${dataset}`, `tuning: ${model}_${method}`), made for what that option holds:
the embedded dataset's evaluate block scores the embedded task's prompts with its known reward;
the tiny model's tuning suits the tiny checkpoint. A run that keeps the option but overrides
what it holds (`dataset.path=mine.jsonl` on dataset=embedded, `model.name_or_path=Qwen/...` on
model=tiny) no longer uses what the companion was made for, and the companion is dropped
(`~evaluate`, `~tuning`), with one line saying so: the run is then judged on its own data only
with the scorers the user names, and trained with the method's own defaults.

One rule for every companion: it applies while the owner option's keys in `Companion.keys` hold
the option's own values (`Companion.same`: the same value, a path however it is written). A
companion the command line names itself (`tuning=tiny_dpo`, for a fine-tune of the tiny model)
is the user's choice and stays. Decided in the launching process for every job, before validation, and
passed to Hydra as the same deletion overrides, so Hydra composes each job as it was validated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf.core.errors import ConfigError


def same_path(ours: Any, theirs: Any) -> bool:
    """The same value, or two ways to write the path of one local file or directory."""
    from pathlib import Path

    if ours == theirs:
        return True
    paths = [Path(str(v)).expanduser() for v in (ours, theirs) if v is not None]
    return len(paths) == 2 and all(p.exists() for p in paths) and paths[0].resolve() == paths[1].resolve()


@dataclass(frozen=True)
class Companion:
    group: str  # the companion's config group (a root default chosen after the owner's option)
    owner: str  # the group whose option it was made for
    keys: tuple[str, ...]  # the owner's keys that say what the option holds
    made_for: str  # what it was made for, in a message
    without: str  # what the run does without it, in a message
    same: Callable[[Any, Any], bool] = same_path  # whether a key's new value still holds what it was made for


COMPANIONS = (
    Companion("evaluate", "dataset", ("dataset.path",), "the embedded task's prompts and reward",
              "the generation eval stage runs only with scorers you name, on your own eval prompts "
              "(evaluate.reward_funcs=[module.function] or evaluate.reward_models=[<reward model>]); "
              "without one it is off"),
    Companion("tuning", "model", ("model.name_or_path", "model.tokenizer"), "that model option's checkpoint",
              "the method's own defaults apply (conf/method/<method>.yaml): set method.* for your checkpoint, "
              "or choose a model option made for it (model=<option>), or keep this tuning by naming it "
              "(tuning=<option>: a fine-tune of the option's checkpoint)"),
)


@dataclass(frozen=True)
class LeftBehind:
    """A companion a job no longer uses what it was made for: dropped, with why."""

    companion: Companion
    option: str  # the companion's option (embedded, tiny_dpo)
    owner_option: str  # the owner's option (embedded, tiny)
    changed: tuple[str, ...]  # the owner keys the job overrode, as key=value

    @property
    def deletion(self) -> str:
        """The override that drops it."""
        return f"~{self.companion.group}"

    def sentence(self) -> str:
        c = self.companion
        return (f"{', '.join(self.changed)} leaves {c.owner}={self.owner_option}, so {c.group}={self.option} "
                f"(conf/{c.group}/{self.option}.yaml, made for {c.made_for}) does not apply: {c.without}")


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def left_behind(job: list[str], composed: Any, choices: dict[str, Any],
                compose: Callable[[list[str]], tuple[Any, dict[str, Any]]]) -> list[LeftBehind]:
    """The companions of one job (its overrides `job`, composed as `composed` with Hydra's
    `choices`) whose owner keys the job overrides with values other than the owner option's own.
    `compose` composes other overrides (the option's own values are read from the job composed
    without those overrides)."""
    found = []
    for companion in COMPANIONS:
        option = choices.get(companion.group)
        changed = [o for o in job if override_key(o) in companion.keys]
        named = any(override_key(o) == companion.group for o in job)  # the user chose it: theirs
        if option is None or not changed or named:
            continue
        own, _ = compose([o for o in job if override_key(o) not in companion.keys])
        if not all(companion.same(_resolved(own, key), _resolved(composed, key)) for key in companion.keys):
            found.append(LeftBehind(companion, str(option), str(choices.get(companion.owner)), tuple(changed)))
    return found


def _resolved(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)


def same_for_every_job(found: list[list[LeftBehind]], jobs: list[list[str]]) -> list[str]:
    """The deletion overrides every job of the command shares (Hydra applies the command's
    overrides to all of them); a ConfigError when the jobs of a sweep differ in what they leave."""
    deletions = [sorted({left.deletion for left in job}) for job in found]
    if any(d != deletions[0] for d in deletions):
        mixed = [f"{' '.join(job)}: {', '.join(d) or 'none'}" for job, d in zip(jobs, deletions)]
        raise ConfigError("the sweep's jobs differ in which option-made settings apply (some override what their "
                          "option holds, some do not): " + "; ".join(mixed) + ". Run them as separate sweeps")
    return deletions[0] if deletions else []
