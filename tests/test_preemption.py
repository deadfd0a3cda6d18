"""Ranks agreeing to stop on SLURM's warning signal: the device of the collective per backend
(no GPU needed: nothing here calls CUDA), and a real two-process gloo all-reduce."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rlhf.job.preemption
from rlhf.job.preemption import Preemption, collective_device


def test_gloo_agrees_on_the_cpu():
    for backend in ("gloo", "cpu:gloo,cuda:gloo", "GLOO"):
        assert collective_device(backend, 3) == torch.device("cpu"), backend


def test_nccl_agrees_on_the_ranks_own_gpu():
    for backend in ("nccl", "cuda:nccl"):
        device = collective_device(backend, 3)
        assert (device.type, device.index) == ("cuda", 3), backend
    assert collective_device("nccl", 0) == torch.device("cuda", 0)


def test_a_group_with_a_cpu_backend_beside_nccl_agrees_on_the_cpu():
    """accelerate's FSDP with CPU offload: "cuda:nccl,cpu:gloo"; the CPU needs no GPU sync."""
    assert collective_device("cuda:nccl,cpu:gloo", 1) == torch.device("cpu")


def test_mpi_and_ucc_take_cpu_tensors():
    assert collective_device("mpi", 1) == torch.device("cpu")
    assert collective_device("ucc", 1) == torch.device("cpu")


@pytest.mark.parametrize("backend", ["xccl", "xpu:xccl", "hccl", "undefined", ""])
def test_a_backend_without_cpu_or_cuda_is_a_clear_error(backend):
    with pytest.raises(ValueError, match="cpu .* or cuda"):
        collective_device(backend, 0)


def test_one_process_agrees_with_itself_without_a_collective(monkeypatch):
    def no_collective(*args, **kwargs):
        raise AssertionError("a single process must not all-reduce")

    monkeypatch.setattr(dist, "all_reduce", no_collective)
    preemption = Preemption()
    assert preemption.agreed() is False
    preemption.signum = signal.SIGTERM
    assert preemption.agreed() is True


def test_agreed_puts_the_flag_on_the_device_of_the_groups_backend(monkeypatch):
    """Under NCCL (faked: no GPU here) agreed() asks for the current GPU and the group's backend."""
    asked, reduced = [], []

    def device_for(backend, cuda_index):
        asked.append((backend, cuda_index))
        return torch.device("cpu")  # what the fake all_reduce can hold; the real choice is tested above

    def all_reduce(tensor, op):
        reduced.append(tensor.device)
        tensor.fill_(1)  # another rank got the signal

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_backend_config", lambda group=None: "cuda:nccl")
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(rlhf.job.preemption, "collective_device", device_for)
    preemption = Preemption()
    assert preemption.agreed() is True and preemption.signum == signal.SIGUSR2
    assert asked == [("cuda:nccl", 1)] and reduced == [torch.device("cpu")]


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = {}
        for case, signalled in {"rank 1 signalled": 1, "none signalled": None}.items():
            preemption = Preemption()
            if rank == signalled:
                preemption.signum = signal.SIGTERM
            results[case] = [preemption.agreed(), preemption.signum]
        Path(out, f"{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_stop_together_when_either_got_the_signal(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    # rank 0 did not get the signal but stops as if warned (USR2); rank 1 keeps its own SIGTERM
    assert results[0]["rank 1 signalled"] == [True, signal.SIGUSR2]
    assert results[1]["rank 1 signalled"] == [True, signal.SIGTERM]
    assert results[0]["none signalled"] == results[1]["none signalled"] == [False, None]
