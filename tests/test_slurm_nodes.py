"""Jobs over several nodes: the rendezvous address of a multi-node SLURM job, rank 0 alone
preparing the data while the other ranks wait for it, a real two-node job (one rank per node,
on the project's local cluster started with two nodes) whose losses match one process, and the
cluster's fallback layout and its refusal to restart under a running job."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import cli_env, job_dir, read_history, run_cli, train
from rlhf.cluster import distributed
from rlhf.run import rundir
from rlhf.launch.compose import compose_job
from rlhf.config.validate import validate
from rlhf.core.errors import DataError, RlhfError

# ------------------------------------------------------------------ where rank 0 runs


@pytest.mark.parametrize("nodelist, first", [
    ("node1", "node1"), ("node1,node2", "node1"), ("rlhf-node[1-2]", "rlhf-node1"),
    ("gpu[07-09,12],cpu1", "gpu07"), ("gpu[12,3-4]", "gpu12"), ("rack[2-3]-n[05-06]", "rack2-n05"),
    (" a[1]", "a1"),
])
def test_the_first_host_of_a_slurm_node_list(nodelist, first):
    assert distributed.first_host(nodelist) == first


@pytest.mark.parametrize("nodelist", ["", "node[1-2", "node[]"])
def test_a_node_list_that_cannot_be_read_is_a_clear_error(nodelist):
    with pytest.raises(RlhfError, match="cannot read the SLURM node list"):
        distributed.first_host(nodelist)


def fake_scontrol(directory: Path, output: str) -> None:
    script = directory / "scontrol"
    script.write_text(f"#!/bin/sh\necho '{output}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def slurm_task_env(monkeypatch, **extra: str) -> None:
    """Rank 1 of a two-task SLURM step; what export_slurm_ranks writes is undone after the test."""
    exported = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    for key in {*exported, *(k for k in os.environ if k.startswith("SLURM_"))}:
        monkeypatch.setenv(key, "")  # recorded, so that the test's value is removed again
        monkeypatch.delenv(key)
    for key, value in {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_JOB_ID": "77",
                       **extra}.items():
        monkeypatch.setenv(key, value)


def test_a_multi_node_job_meets_at_its_first_node_not_where_srun_was_started(monkeypatch):
    # SLURM_LAUNCH_NODE_IPADDR is where srun ran: a login node under salloc, not a rank's node.
    slurm_task_env(monkeypatch, SLURM_JOB_NODELIST="localhost,elsewhere", SLURM_LAUNCH_NODE_IPADDR="10.9.9.9")
    distributed.export_slurm_ranks()
    assert os.environ["MASTER_ADDR"] == "127.0.0.1"
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_PORT"]) == ("1", "2", "20077")


def test_a_node_name_without_dns_is_found_by_its_slurm_node_address(monkeypatch, tmp_path):
    fake_scontrol(tmp_path, "NodeName=rlhf-nowhere-1 Arch=x86_64 NodeAddr=127.0.0.1 NodeHostName=vm")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    slurm_task_env(monkeypatch, SLURM_STEP_NODELIST="rlhf-nowhere-[1-2]", SLURM_JOB_NODELIST="other[1-2]")
    distributed.export_slurm_ranks()
    assert os.environ["MASTER_ADDR"] == "127.0.0.1"


def test_a_node_without_any_address_is_a_clear_error(monkeypatch, tmp_path):
    fake_scontrol(tmp_path, "Node rlhf-nowhere-1 not found")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    slurm_task_env(monkeypatch, SLURM_JOB_NODELIST="rlhf-nowhere-[1-2]")
    with pytest.raises(RlhfError, match=r"node rlhf-nowhere-1 .*'Node rlhf-nowhere-1 not found'.*MASTER_ADDR"):
        distributed.export_slurm_ranks()


def test_a_master_addr_given_by_the_user_is_kept(monkeypatch):
    slurm_task_env(monkeypatch, SLURM_JOB_NODELIST="rlhf-nowhere-[1-2]", MASTER_ADDR="10.1.2.3")
    distributed.export_slurm_ranks()
    assert os.environ["MASTER_ADDR"] == "10.1.2.3"


def test_one_process_reports_where_it_runs_without_a_collective():
    ranks = distributed.gather_ranks()
    assert len(ranks) == 1 and ranks[0]["rank"] == 0 and ranks[0]["pid"] == os.getpid()


# ------------------------------------------------------------------ rank 0 prepares the data, the others wait


@pytest.fixture
def data_run(tmp_path, monkeypatch):
    """A run of the embedded default and its run dir, as rank `RANK` of two sees them."""
    from rlhf.models.loading import load_tokenizer

    run = validate(compose_job([f"cache_dir={tmp_path / 'cache'}"]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for key in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID",
                "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29555")
    return run, load_tokenizer(run.model), run_dir


def as_rank(monkeypatch, rank: int) -> None:
    monkeypatch.setenv("RANK", str(rank))


def must_not_read_the_sources(monkeypatch):
    """Any rank but 0 must not touch the sources (a hub dataset would download on every node)."""
    from rlhf.data import cache as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a rank other than 0 read the sources")

    monkeypatch.setattr(pipeline, "cache_key", refuse)
    monkeypatch.setattr(pipeline, "build", refuse)


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


def test_rank_0_prepares_and_the_other_rank_loads_what_it_names(data_run, monkeypatch):
    from rlhf.data.cache import prepare_data
    from rlhf.run.files import PREPARED

    run, tokenizer, run_dir = data_run
    as_rank(monkeypatch, 0)
    prepared = prepare_data(run, tokenizer, run_dir=run_dir)
    assert prepared.cache == "miss" and json.loads((run_dir / PREPARED).read_text())["path"] == str(prepared.path)
    as_rank(monkeypatch, 1)
    must_not_read_the_sources(monkeypatch)
    other = prepare_data(run, tokenizer, run_dir=run_dir)
    assert other.cache == "from rank 0" and other.path == prepared.path
    assert other.train.to_list() == prepared.train.to_list()


def test_the_other_rank_waits_for_rank_0_past_an_earlier_failure(data_run, monkeypatch):
    """A FAILED left by an earlier start does not stop the wait; rank 0's word does."""
    from rlhf.data.cache import prepare_data

    run, tokenizer, run_dir = data_run
    as_rank(monkeypatch, 0)
    prepared = prepare_data(run, tokenizer)  # in the cache, not yet published for this launch
    (run_dir / rundir.FAILED).write_text("an earlier start failed\n")
    as_rank(monkeypatch, 1)
    must_not_read_the_sources(monkeypatch)
    publisher = later(1.0, lambda: distributed.publish(run_dir, ".prepared_data.json", {"path": str(prepared.path)}))
    started = time.monotonic()
    other = prepare_data(run, tokenizer, run_dir=run_dir)
    publisher.join()
    assert other.path == prepared.path and 0.9 < time.monotonic() - started < 30


def test_the_other_rank_stops_at_once_when_rank_0_fails(data_run, monkeypatch):
    from rlhf.data.cache import prepare_data

    run, tokenizer, run_dir = data_run
    as_rank(monkeypatch, 1)
    must_not_read_the_sources(monkeypatch)
    failing = later(1.0, lambda: rundir.mark_failed(run_dir, DataError("data.jsonl:3: no field 'chosen'")))
    started = time.monotonic()
    with pytest.raises(RlhfError, match=r"rank 0 failed before it could prepare the data: .*no field 'chosen'"):
        prepare_data(run, tokenizer, run_dir=run_dir)
    failing.join()
    assert time.monotonic() - started < 30  # not the whole wait


def test_a_word_from_an_earlier_launch_is_not_taken_and_the_wait_ends(data_run, monkeypatch):
    from rlhf.data.cache import prepare_data
    from rlhf.run.files import PREPARED

    run, tokenizer, run_dir = data_run
    as_rank(monkeypatch, 0)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    prepare_data(run, tokenizer, run_dir=run_dir)  # published by the first start
    as_rank(monkeypatch, 1)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued start: rank 0 has not said anything yet
    monkeypatch.setattr(distributed, "RANK0_WAIT_S", 1.5)
    with pytest.raises(RlhfError, match=rf"rank 0 did not prepare the data within 2 s: {run_dir / PREPARED} did not "
                                        "appear for this launch"):
        prepare_data(run, tokenizer, run_dir=run_dir)


def test_data_rank_0_names_but_this_rank_cannot_see_is_a_clear_error(data_run, monkeypatch, tmp_path):
    from rlhf.data.cache import prepare_data

    run, tokenizer, run_dir = data_run
    distributed.publish(run_dir, ".prepared_data.json", {"path": str(tmp_path / "elsewhere" / "data" / "abc")})
    as_rank(monkeypatch, 1)
    with pytest.raises(DataError, match=r"report.json is missing\): cache_dir=.* must be on a filesystem every node"):
        prepare_data(run, tokenizer, run_dir=run_dir)


# ------------------------------------------------------------------ a real job over two nodes

LAUNCHER = ("hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
            "hydra.launcher.signal_delay_s=30")


@pytest.fixture(scope="module")
def two_nodes(slurm_cluster):
    """The project's cluster with two compute nodes, back to one afterwards (what the other
    SLURM tests expect)."""
    slurm_cluster.start(nodes=2)
    yield slurm_cluster
    slurm_cluster.start(nodes=1)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.distributed
def test_a_two_node_job_runs_a_rank_per_node_and_matches_a_single_process(two_nodes, tmp_path):
    train(tmp_path, "method.max_steps=4", "method.micro_batch_size=16", "method.logging_steps=1",
          "hardware.torch_threads=1", run_dir=tmp_path / "single")
    sweep = tmp_path / "sweep"
    run_cli("rlhf.train", "-m", *LAUNCHER, "hardware.nodes=2", "hardware.processes_per_node=1",
            "hardware.distributed=ddp", "hardware.cpus_per_process=1", f"hydra.sweep.dir={sweep}",
            f"cache_dir={tmp_path / 'cache_two_nodes'}",  # not yet prepared: rank 0 prepares, rank 1 waits
            "method.max_steps=4", "method.micro_batch_size=8", "method.logging_steps=1", cwd=tmp_path,
            env=cli_env(**two_nodes.env()), timeout=900)
    run = job_dir(sweep, 0)
    metrics = json.loads((run / "metrics.json").read_text())
    layout = two_nodes.layout()
    ranks = metrics["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["slurm_node"] for r in ranks] == layout.nodes  # one rank on each node
    assert [r["address"] for r in ranks] == layout.addresses
    assert {r["master_addr"] for r in ranks} == {layout.addresses[0]}  # both met at the first node
    assert metrics["data"]["cache"] == "miss" and metrics["data"]["path"].startswith(str(tmp_path / "cache_two_nodes"))
    rank_1 = [p.read_text() for p in (sweep / ".submitit").rglob("*_1_log.out")]  # submitit's log of task 1
    assert len(rank_1) == 1 and "data cache from rank 0" in rank_1[0]
    single = [h["loss"] for h in read_history(tmp_path / "single") if "loss" in h]
    two = [h["loss"] for h in read_history(run) if "loss" in h]
    assert len(two) == 4 and two == pytest.approx(single, rel=1e-5, abs=1e-6)


@pytest.mark.slurm
def test_the_nodes_can_share_one_address_and_a_busy_cluster_is_not_restarted(two_nodes):
    """The fallback where namespaces cannot be made (multiple-slurmd on 127.0.0.1) runs a step
    on both nodes; a start that would change the node count refuses while a job runs."""
    two_nodes.start(nodes=2, isolation="ports")
    layout = two_nodes.layout()
    assert (layout.mode, layout.addresses) == ("ports", ["127.0.0.1", "127.0.0.1"])
    env = cli_env(**two_nodes.env())
    step = subprocess.run(["srun", "-N2", "-n2", "printenv", "SLURMD_NODENAME"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert sorted(step.stdout.split()) == layout.nodes, step.stderr
    job = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 120"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        with pytest.raises(RuntimeError, match=rf"runs 2 nodes .* has jobs {job} \((running|pending)\): wait for "
                                               "them .* --nodes 1"):
            two_nodes.start(nodes=1)
        assert two_nodes.is_up() and two_nodes.layout().mode == "ports"  # left as it was
    finally:
        subprocess.run(["scancel", job], env=env, check=True)
