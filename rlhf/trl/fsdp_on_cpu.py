"""accelerate's FSDP on CPU ranks: accelerate 1.15 drops an FSDP plugin on CPU ranks (its
AcceleratorState keeps one only for GPU-like devices) and the ranks silently train as DDP;
`fsdp_on_cpu` applies accelerate's own GPU step to CPU ranks, so `hardware.distributed=fsdp`
trains FSDP2 over gloo (accelerate/state.py, AcceleratorState.__init__, ~994-1016). The
strategy the ranks really ran is recorded in metrics.json (rlhf.cluster.distributed.describe),
so a later accelerate that changes this shows there.
"""

from __future__ import annotations

from rlhf.trl import written_for

WRITTEN_FOR = written_for(accelerate=">=1.15,<1.16")


def fsdp_on_cpu() -> None:
    """Let accelerate run FSDP on CPU ranks (gloo). torch's FSDP2 (`fully_shard`) shards,
    gathers and reduce-scatters CPU tensors over gloo, but accelerate's AcceleratorState turns
    an FSDP plugin into DistributedType.FSDP only for GPU-like devices (MULTI_GPU, MULTI_XPU,
    ...); on MULTI_CPU it drops the plugin and the ranks silently train as DDP. This applies
    that same step to MULTI_CPU: the plugin is kept and the state says FSDP, so the Trainer,
    TRL and accelerate take their FSDP code path, as on GPUs. Idempotent; a process that never
    asks for FSDP on CPU is unaffected (no plugin, nothing changes)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if getattr(AcceleratorState.__init__, "_rlhf_cpu_fsdp", False):
        return
    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            # accelerate/state.py, AcceleratorState.__init__, the MULTI_GPU branch:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = self.distributed_type

    init._rlhf_cpu_fsdp = True
    AcceleratorState.__init__ = init
