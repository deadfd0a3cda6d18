"""Confidence intervals said honestly: the mean of a few values (seeds, prompts) with the
interval of its level, by Student's t with n-1 degrees of freedom. No SciPy: the t quantile
comes from the finite series for integer degrees of freedom."""

from __future__ import annotations

import math
from typing import Any

LEVEL = 0.95


def _central_t(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df > 0: the finite series of Abramowitz and
    Stegun 26.7.3 (odd df) and 26.7.4 (even df), exact up to rounding."""
    theta = math.atan(t / math.sqrt(df))
    cos = math.cos(theta)
    if df % 2:
        term, total = cos, 0.0
        for j in range(1, (df - 1) // 2 + 1):  # cos + 2/3 cos^3 + (2*4)/(3*5) cos^5 + ... cos^(df-2)
            total += term
            term *= cos * cos * (2 * j) / (2 * j + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term, total = 1.0, 0.0
    for j in range(1, df // 2 + 1):  # 1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... cos^(df-2)
        total += term
        term *= cos * cos * (2 * j - 1) / (2 * j)
    return math.sin(theta) * total


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| <= t) = level, Student's t with df degrees of freedom: the half-width
    of a two-sided interval in standard errors (4.303 for df=2 at 95%)."""
    if df < 1 or not 0 < level < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0 < level < 1, not df={df}, level={level}")
    low, high = 0.0, 1.0
    while _central_t(high, df) < level:
        low, high = high, high * 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if _central_t(middle, df) < level else (low, middle)
    return (low + high) / 2


def summarize(values: list[float], level: float = LEVEL) -> dict[str, Any]:
    """n, mean, sample std (n-1) and the level confidence interval of the mean by Student's t
    with n-1 degrees of freedom; with one value no std and no interval (None)."""
    n = len(values)
    mean = math.fsum(values) / n if n else None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    half = t_quantile(n - 1, level) * std / math.sqrt(n) if n > 1 else None
    return {"n": n, "mean": mean, "std": std,
            "ci_low": mean - half if half is not None else None,
            "ci_high": mean + half if half is not None else None}
