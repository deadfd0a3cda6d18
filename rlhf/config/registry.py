"""What the sides above config register, so that validation asks them without importing them.

- `METHODS`: every method's spec by its kind (rlhf.methods.base.register fills it when
  rlhf.methods is imported). Validation types `method.*` with the spec's schema and runs its
  own check.
- `RUN_CHECKS`: the run checks of a side, by the side's name (rlhf.data registers its dataset
  checks, rlhf.judge the evaluate block's; config's own are rlhf.config.checks.RUN_CHECKS).
  Each takes the typed run and returns the problems it finds, as sentences.

`missing_sides()` names a side validation needs that has not registered, so that a run is never
validated without part of its checks: importing rlhf.job (every entry point does) registers them
all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], list[str]]

# kind -> rlhf.methods.base.MethodSpec
METHODS: dict[str, Any] = {}
# side -> its run checks, in the order they run
RUN_CHECKS: dict[str, tuple[Check, ...]] = {}
# The sides whose checks every validation runs: (side, the package whose import registers it).
SIDES = (("methods", "rlhf.methods"), ("data", "rlhf.data"), ("judge", "rlhf.judge"))


def register_checks(side: str, *checks: Check) -> None:
    """Register `side`'s run checks (again: replaces them, as a module re-imported would)."""
    RUN_CHECKS[side] = checks


def side_checks() -> list[Check]:
    """Every registered run check of the sides above config, in registration order."""
    return [check for checks in RUN_CHECKS.values() for check in checks]


def missing_sides() -> list[str]:
    """The packages to import before validating: those whose side has registered nothing."""
    registered = {"methods"} if METHODS else set()
    registered |= set(RUN_CHECKS)
    return [package for side, package in SIDES if side not in registered]
