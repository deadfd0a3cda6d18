"""`python -m rlhf.train --help [overrides]`: the groups, their options, and every key of the
composed config with its current value and what it does (from the schemas' help texts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlhf.config.schema import GROUP_SCHEMAS, RunConfig

GROUP_ORDER = ("method", "dataset", "model", "hardware", "peft", "logger")
EXTRA_GROUPS = ("experiment",)  # selected with +experiment=<name>

USAGE = """\
usage: python -m rlhf.{entry} [group=option ...] [key=value ...]
       python -m rlhf.{entry} -m key=a,b other=x,y     (a sweep: one job per combination)
       python -m rlhf.{entry} --cfg job [overrides]    (print the composed config)
       python -m rlhf.{entry} --help [overrides]       (this help, for the composed config)
"""

EXAMPLES = """\
examples:
  python -m rlhf.train                                        # the embedded default (DPO, tiny model, CPU)
  python -m rlhf.train method=ipo method.beta=0.5
  python -m rlhf.train -m method.beta=0.05,0.1 method.loss_type=sigmoid,ipo
  python -m rlhf.train model=qwen2.5-0.5b-instruct hardware=gpu dataset.path=data.jsonl dataset.type=chatml.intel
"""


def group_options(conf_dir: Path, group: str) -> list[str]:
    root = conf_dir / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    return "null" if value is None else str(value)


def _keys(prefix: str, schema: type, node: Any) -> list[tuple[str, str, str]]:
    rows = []
    for f in dataclasses.fields(schema):
        value = node.get(f.name) if node is not None else None
        if isinstance(value, (list, dict)) and value and not isinstance(value, str):
            shown = "[...]" if isinstance(value, list) else "{...}"
        else:
            shown = _value(value)
        rows.append((f"{prefix}{f.name}", shown, f.metadata.get("help", "")))
    return rows


def render(conf_dir: Path, overrides: list[str], entry: str = "train") -> str:
    from omegaconf import OmegaConf

    from rlhf.config.compose import compose_job
    from rlhf.methods import METHODS

    cfg = OmegaConf.to_container(compose_job(overrides), resolve=False)
    lines = [USAGE.format(entry=entry), "config groups (group=option):"]
    for group in GROUP_ORDER:
        lines.append(f"  {group + ':':<10} {', '.join(group_options(conf_dir, group))}")
    for group in EXTRA_GROUPS:
        lines.append(f"  {group + ':':<10} {', '.join(group_options(conf_dir, group))}   (+{group}=<name>)")
    lines.append("")
    method = cfg.get("method") or {}
    schemas = {"method": METHODS[method["kind"]].schema if method.get("kind") in METHODS else None,
               **GROUP_SCHEMAS}
    for group in GROUP_ORDER:
        schema = schemas.get(group)
        if schema is None:
            continue
        lines.append(f"{group} keys ({group}.<key>=value):")
        for key, value, text in _keys(f"{group}.", schema, cfg.get(group)):
            lines.append(f"  {key:<36} {value:<18.18} {text}")
        lines.append("")
    lines.append("run keys:")
    for key, value, text in _keys("", RunConfig, cfg):
        if key in GROUP_ORDER:
            continue
        lines.append(f"  {key:<36} {value:<18.18} {text}")
    lines += ["", EXAMPLES]
    return "\n".join(lines)
