"""How figures are written in the progress lines of training and of the data stage: numbers,
durations, paces and positions, plain functions of their inputs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """H:MM:SS (and days beyond 24 hours)."""
    return str(timedelta(seconds=max(0, round(seconds))))


def pace(steps_per_second: float) -> str:
    """Steps per second, or seconds per step when a step takes longer than a second."""
    if steps_per_second >= 1:
        return f"{steps_per_second:.3g} steps/s"
    return f"{1 / steps_per_second:.3g} s/step"


def position(step: int, total: int) -> str:
    return f"{step}/{total} ({100 * step // total}%)" if total > 0 else str(step)
