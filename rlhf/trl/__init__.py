"""Every place the platform reaches into TRL's, transformers' Trainer's or accelerate's
internals, fenced here, each module naming the library versions it was written against
(`written_for`; tests/test_trl_adapters.py fails when the installed versions leave that range):

- `pretokenized`: TRL's preference trainers kept from tokenizing again what the data stage made;
- `tokenize_row`: ORPO's and CPO's own `tokenize_row`, called on an instance built with __new__;
- `shared_reference`: DPOTrainer's reference log-probs precomputed once and shared by a sweep;
- `run_totals`: the train loss and TRL's token count of a whole run, across resumes;
- `fsdp_on_cpu`: accelerate's FSDP set-up applied to CPU ranks (it drops the plugin there);
- `fused_logps`: TRL's fused LM head, scoped to one call, for log-probs without full logits;
- `padding_free`: the trainers' model calls run each padded batch as one packed row.

Each module's `WRITTEN_FOR` is `written_for(trl=..., ...)`: the installed versions outside the
range are logged once when the module is imported, as a warning that the adapter may no longer
fit the library it reaches into.

May import: rlhf.core, rlhf.assets, rlhf.config, rlhf.run, rlhf.models, rlhf.rewards, rlhf.methods.
"""

from __future__ import annotations

import logging

from rlhf.core.versions import installed_versions

log = logging.getLogger("rlhf")


def outside(ranges: dict[str, str], installed: dict[str, str | None]) -> list[str]:
    """The packages of `ranges` (name -> a PEP 440 specifier, e.g. ">=1.16,<1.17") whose
    `installed` version is not in its range (or not installed), as sentences."""
    from packaging.specifiers import SpecifierSet

    problems = []
    for package, spec in ranges.items():
        version = installed.get(package)
        if version is None or version not in SpecifierSet(spec):
            problems.append(f"{package} {version or '(not installed)'} is outside {spec}")
    return problems


def written_for(**ranges: str) -> dict[str, str]:
    """An adapter's version ranges (package -> specifier), checked against what is installed:
    a package outside its range is a warning in the log. Returns the ranges."""
    problems = outside(ranges, installed_versions(list(ranges)))
    if problems:
        log.warning("an adapter of library internals was written for %s, and %s: it may not fit what is "
                    "installed", ", ".join(f"{p} {s}" for p, s in ranges.items()), "; ".join(problems))
    return dict(ranges)
