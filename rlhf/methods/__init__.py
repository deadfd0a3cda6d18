"""The method registry: importing this package imports every module in it, and each module
registers its method (`register(MethodSpec(...))`). A new method is one module here plus its
`conf/method/<name>.yaml`; nothing else names it."""

import importlib
import pkgutil

from rlhf.methods.base import METHODS, MethodConfig, MethodSpec, lookup, method_names

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "MethodConfig", "MethodSpec", "lookup", "method_names"]
