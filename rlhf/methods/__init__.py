"""The method registry: importing this package registers every method."""

from rlhf.methods import dpo, grpo, kto, orpo, simpo  # noqa: F401  (each registers itself)
from rlhf.methods.base import METHODS, MethodConfig, MethodSpec

__all__ = ["METHODS", "MethodConfig", "MethodSpec"]
