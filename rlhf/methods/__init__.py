"""The method registry: importing this package registers every method."""

from rlhf.methods import dpo  # noqa: F401  (registers itself)
from rlhf.methods.base import METHODS, MethodConfig, MethodSpec

__all__ = ["METHODS", "MethodConfig", "MethodSpec", "method_spec"]


def method_spec(kind: str) -> MethodSpec:
    from rlhf.errors import ConfigError, did_you_mean, one_of

    if kind not in METHODS:
        raise ConfigError(f"method.kind={kind!r} is not a registered method{did_you_mean(kind, METHODS)}; "
                          f"registered: {one_of(METHODS)}")
    return METHODS[kind]
