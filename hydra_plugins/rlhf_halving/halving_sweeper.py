"""Hydra's entry to rlhf's halving sweep (`hydra/sweeper=halving`): Hydra finds sweepers only in
the hydra_plugins package, so the class lives here and the sweep itself in rlhf.launch.halving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper


class HalvingSweeper(Sweeper):
    """Successive halving over the sweep's settings, rung by rung (rlhf.launch.halving)."""

    def __init__(self, rungs: Any = None, min_steps: Any = None, eta: Any = 3, metric: Any = None,
                 direction: Any = None) -> None:
        from rlhf.launch.halving import Params

        self.params = Params(rungs=list(rungs) if rungs is not None else None, min_steps=min_steps, eta=eta,
                             metric=metric, direction=direction)
        self.config: Any = None
        self.launcher: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                               task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from omegaconf import OmegaConf

        from rlhf.launch import halving

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return halving.sweep(self.params, arguments, self.launcher, sweep_dir)
