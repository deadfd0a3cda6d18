"""Register every schema in Hydra's ConfigStore and the `${asset:...}` resolver.

Shipped YAML options name their schema in their defaults list (`defaults: [base_dpo]`), and
the root config extends `base_config`.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from rlhf.assets import asset_path
from rlhf.config.schema import GROUP_SCHEMAS, RunConfig
from rlhf.methods import METHODS

_registered = False



def register_configs() -> None:
    global _registered
    if _registered:
        return
    store = ConfigStore.instance()
    store.store(name="base_config", node=RunConfig)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"base_{group}", node=schema)
    for kind, spec in METHODS.items():
        store.store(group="method", name=f"base_{kind}", node=spec.schema)
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)
    if not OmegaConf.has_resolver("none_if_zero"):  # launchers: no "--gpus-per-node=0" for SLURM
        OmegaConf.register_new_resolver("none_if_zero", lambda value: None if value in (0, "0") else value)
    _registered = True
