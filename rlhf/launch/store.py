"""Register every schema in Hydra's ConfigStore, and the resolvers the shipped YAML uses.

Shipped YAML options name their schema in their defaults list (`defaults: [base_dpo]`), and
the root config extends `base_config`. `${asset:...}` is a shipped file's absolute path;
`${embedded:path|type|eval}` is the embedded data of the config's own method (its spec's
`embedded_data`), which is how `dataset=embedded` follows `method=...` in a sweep.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from rlhf.assets import asset_path
from rlhf.config.schema import GROUP_SCHEMAS, EvaluateConfig, RunConfig, SourceConfig
from rlhf.core.errors import ConfigError, one_of
from rlhf.methods import METHODS, lookup
from rlhf.run.naming import overrides_suffix

_registered = False
EMBEDDED_KEYS = ("path", "type", "eval")


def embedded_data(key: str, _root_: Any) -> Any:
    """`${embedded:<key>}`: the embedded data of the method this config trains with."""
    if key not in EMBEDDED_KEYS:
        raise ConfigError(f"${{embedded:{key}}}: the key must be one of {one_of(EMBEDDED_KEYS)}")
    data = lookup(str(_root_.method.kind)).embedded_data
    if key == "path":
        return asset_path(data.train)
    if key == "type":
        return data.type
    # A ListConfig of typed sources, as `eval: [...]` written in YAML composes (OmegaConf.resolve()
    # cannot put a plain list in place of the interpolation).
    entries = [SourceConfig(path=asset_path(data.eval), type=data.type)] if data.eval else []
    return OmegaConf.create([OmegaConf.structured(entry) for entry in entries])



def register_configs() -> None:
    global _registered
    if _registered:
        return
    store = ConfigStore.instance()
    store.store(name="base_config", node=RunConfig)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"base_{group}", node=schema)
    store.store(group="evaluate", name="base_evaluate", node=EvaluateConfig)
    for kind, spec in METHODS.items():
        store.store(group="method", name=f"base_{kind}", node=spec.schema)
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)
    if not OmegaConf.has_resolver("embedded"):
        OmegaConf.register_new_resolver("embedded", embedded_data)
    if not OmegaConf.has_resolver("overrides_suffix"):  # run dir names (conf/config.yaml)
        OmegaConf.register_new_resolver("overrides_suffix", overrides_suffix)
    if not OmegaConf.has_resolver("none_if_zero"):  # launchers: no "--gpus-per-node=0" for SLURM
        OmegaConf.register_new_resolver("none_if_zero", lambda value: None if value in (0, "0") else value)
    _registered = True
