"""`python -m rlhf.train --help [overrides]`: the groups, their options, and every key of the
composed config with its current value and what it does (from the schemas' help texts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlhf.config.schema import GROUP_SCHEMAS, RunConfig

GROUP_ORDER = ("method", "dataset", "model", "hardware", "peft", "logger")
EXTRA_GROUPS = ("experiment",)  # selected with +experiment=<name>
# Chosen by another group's option of the same name (conf/config.yaml: `optional evaluate: ${dataset}`).
FOLLOWING_GROUPS = {"evaluate": "dataset"}

USAGE = """\
usage: python -m rlhf.{entry} [group=option ...] [key=value ...]
       python -m rlhf.{entry} -m key=a,b other=x,y     (a sweep: one job per combination)
       python -m rlhf.{entry} --cfg job [overrides]    (print the composed config)
       python -m rlhf.{entry} --help [overrides]       (this help, for the composed config)
"""

# Each line is a command that runs as it is (tests/test_help.py composes and validates every
# one; data.jsonl stands for the user's own file).
EXAMPLES = """\
examples:
  python -m rlhf.train                                        # the embedded default (DPO, tiny model, CPU)
  python -m rlhf.train method=ipo method.beta=0.5
  python -m rlhf.train -m method.beta=0.05,0.1 method.loss_type=sigmoid,ipo
  python -m rlhf.train method=kto model=qwen2.5-0.5b-instruct hardware=gpu
  python -m rlhf.train dataset.path=data.jsonl dataset.type=chatml.intel 'dataset.eval=[]' dataset.val_set_size=0.05
"""

KEY_WIDTH, VALUE_WIDTH = 36, 18
WIDTH = 110  # the option lists wrap here


def group_options(conf_dir: Path, group: str) -> list[str]:
    root = conf_dir / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def _value(value: Any) -> str:
    """A value as it is written in an override, whole."""
    from rlhf.config.explain import shown

    if isinstance(value, str):
        return value if value else "''"
    return shown(value)


def _keys(prefix: str, schema: type, node: Any) -> list[tuple[str, str, str]]:
    rows = []
    for f in dataclasses.fields(schema):
        value = node.get(f.name) if node is not None else None
        rows.append((f"{prefix}{f.name}", _value(value), f.metadata.get("help", "")))
    return rows


def _key_line(key: str, value: str, text: str) -> list[str]:
    """`key value help` in columns; a value too long for its column gets the rest of the line
    and the help text goes on the next line, under the help column."""
    if len(value) <= VALUE_WIDTH:
        return [f"  {key:<{KEY_WIDTH}} {value:<{VALUE_WIDTH}} {text}".rstrip()]
    lines = [f"  {key:<{KEY_WIDTH}} {value}"]
    if text:
        lines.append(" " * (2 + KEY_WIDTH + 1 + VALUE_WIDTH + 1) + text)
    return lines


def _options_line(label: str, options: list[str], note: str = "") -> list[str]:
    import textwrap

    head = f"  {label + ':':<10} "
    return textwrap.wrap(", ".join(options) + note, width=WIDTH, initial_indent=head,
                         subsequent_indent=" " * len(head), break_on_hyphens=False)


def render(conf_dir: Path, overrides: list[str], entry: str = "train") -> str:
    from omegaconf import OmegaConf

    from rlhf.launch.compose import compose_job
    from rlhf.config.schema import NODE_SCHEMAS
    from rlhf.methods import METHODS

    cfg = OmegaConf.to_container(compose_job(overrides), resolve=False)
    lines = [USAGE.format(entry=entry), "config groups (group=option):"]
    for group in GROUP_ORDER:
        lines += _options_line(group, group_options(conf_dir, group))
    for group in EXTRA_GROUPS:
        lines += _options_line(group, group_options(conf_dir, group), f"   (+{group}=<name>)")
    for group, leader in FOLLOWING_GROUPS.items():
        lines += _options_line(group, group_options(conf_dir, group), f"   (follows {leader}=<the same name>)")
    lines.append("")
    method = cfg.get("method") or {}
    schemas = {"method": METHODS[method["kind"]].schema if method.get("kind") in METHODS else None,
               **GROUP_SCHEMAS, **NODE_SCHEMAS}
    for group in (*GROUP_ORDER, *NODE_SCHEMAS):
        schema = schemas.get(group)
        if schema is None:
            continue
        lines.append(f"{group} keys ({group}.<key>=value):")
        for key, value, text in _keys(f"{group}.", schema, cfg.get(group)):
            lines += _key_line(key, value, text)
        lines.append("")
    lines.append("run keys:")
    for key, value, text in _keys("", RunConfig, cfg):
        if key in GROUP_ORDER or key in NODE_SCHEMAS:
            continue
        lines += _key_line(key, value, text)
    lines += ["", EXAMPLES]
    return "\n".join(lines)
