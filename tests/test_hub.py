"""A hub model or dataset with the hub unreachable, offline or without the id: the run fails at
once with one message that says why and names the override to type; a model the local Hugging
Face cache holds still loads with the hub unreachable.

Nothing here touches the network beyond 127.0.0.1: the hub is HF_ENDPOINT pointing at a closed
local port (or at a stand-in hub served by the test), proxies are unset, and every CLI process
runs with a guard (a sitecustomize) that refuses, and records, any connection or name lookup for
another host."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, cli_env, train

GUARD = '''
import os
import socket

_LOCAL = {"127.0.0.1", "localhost", "::1", "", None}


def _refuse(host):
    with open(os.environ["NETWORK_GUARD_LOG"], "a") as f:
        f.write(f"{host}\\n")
    raise OSError(f"network guard: only 127.0.0.1 is reachable in this test (asked for {host})")


def _host(host):
    return host.decode() if isinstance(host, bytes) else host


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    if _host(host) not in _LOCAL:
        _refuse(_host(host))
    return _getaddrinfo(host, *args, **kwargs)


def _guarded(method):
    def call(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _host(address[0]) not in _LOCAL:
            _refuse(_host(address[0]))
        return method(self, address)
    return call


socket.getaddrinfo = getaddrinfo
socket.socket.connect = _guarded(socket.socket.connect)
socket.socket.connect_ex = _guarded(socket.socket.connect_ex)
'''

NETWORK_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
               "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
               "https_proxy", "all_proxy")

# (overrides, what the message names, the override it names)
CASES = {
    "model": (["model=qwen2.5-0.5b-instruct"], "tokenizer 'Qwen/Qwen2.5-0.5B-Instruct'",
              "model.name_or_path=<a local checkpoint dir>"),
    "dataset": (["dataset=orca_dpo_pairs"], "dataset 'Intel/orca_dpo_pairs'",
                "dataset.path=<a local file or directory>"),
}


@pytest.fixture
def closed_port():
    """A local port that refuses connections: bound (so nothing else takes it), never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def stand_in_hub():
    """A hub on 127.0.0.1 that answers as the hub answers for a repository it does not have
    (404 RepoNotFound), one that is gated (a name with "gated": 403 GatedRepo) or a revision it
    does not have (a URL with "no-such-revision": 404 RevisionNotFound)."""
    class Hub(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            status, code = ((403, "GatedRepo") if "gated" in self.path else
                            (404, "RevisionNotFound") if "no-such-revision" in self.path else (404, "RepoNotFound"))
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def hub_env(tmp: Path, endpoint: str, offline: bool = False) -> dict[str, str]:
    """The CLI's environment with the hub at `endpoint`, HF_HUB_OFFLINE unset (or 1), an empty
    Hugging Face cache of its own, no proxy, and the network guard."""
    guard = tmp / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    env = cli_env()
    for key in NETWORK_ENV:
        env.pop(key, None)
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp / "hf"), NO_PROXY="*", NETWORK_GUARD_LOG=str(tmp / "network.log"),
               PYTHONPATH=f"{guard}:{env['PYTHONPATH']}")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def timed_train(tmp: Path, *overrides: str, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    tmp.mkdir(exist_ok=True)
    started = time.monotonic()
    proc = train(tmp, *overrides, check=False, env=env)
    return proc, time.monotonic() - started


def assert_one_message(proc: subprocess.CompletedProcess, names: str, override: str, why: str) -> str:
    """Exit 1; on the terminal, one line names what could not be loaded, says why and gives the
    override; no traceback, no retry warnings. Returns that line."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert "Retrying" not in out and "thrown while requesting" not in out, out[-3000:]
    assert proc.stderr.count(f"cannot load the {names}") == 1, proc.stderr[-3000:]
    assert out.count(f"cannot load the {names}") == 1, out[-3000:]  # not echoed on stdout either
    [line] = [line for line in proc.stderr.splitlines() if f"cannot load the {names}" in line]
    assert line.startswith("error: ") and why in line and override in line, line
    return line


def assert_only_local_network(tmp: Path) -> None:
    log = tmp / "network.log"
    assert not log.exists() or log.read_text() == "", f"reached beyond 127.0.0.1: {log.read_text()}"


@pytest.mark.parametrize("case", CASES)
def test_an_unreachable_or_offline_hub_fails_at_once_with_one_message(tmp_path, closed_port, case):
    """The same command with the hub unreachable and with HF_HUB_OFFLINE=1, started together (so
    a busy machine slows both alike): both fail with the message, and the unreachable hub costs
    no more than 5 s over offline mode, which fails at the loading step without asking the hub.
    (Before, the unreachable hub took 34-59 s more: five retries, 1 to 8 s apart, per file.)"""
    overrides, names, override = CASES[case]
    endpoint = f"http://127.0.0.1:{closed_port}"
    with ThreadPoolExecutor(2) as pool:
        unreachable = pool.submit(timed_train, tmp_path / "unreachable", *overrides, env=hub_env(tmp_path, endpoint))
        offline = pool.submit(timed_train, tmp_path / "offline", *overrides,
                              env=hub_env(tmp_path, endpoint, offline=True))
        (unreachable_proc, unreachable_s), (offline_proc, offline_s) = unreachable.result(), offline.result()
    assert_one_message(unreachable_proc, names, override,
                       f"the hub {endpoint} cannot be reached (Connection refused), and the local Hugging Face "
                       "cache does not hold it")
    assert_one_message(offline_proc, names, override,
                       "HF_HUB_OFFLINE=1 is set, and the local Hugging Face cache does not hold it")
    assert unreachable_s - offline_s < 5, (unreachable_s, offline_s)
    assert_only_local_network(tmp_path)


@pytest.mark.parametrize("overrides,names,override", [
    (["model=qwen2.5-0.5b-instruct", "model.name_or_path=nobody/no-such-model"],
     "tokenizer 'nobody/no-such-model'", "model.name_or_path=<a local checkpoint dir>"),
    (["dataset.eval=[{path: nobody/no-such-data, type: chatml.intel}]"],
     "dataset 'nobody/no-such-data'", "dataset.eval[0].path=<a local file or directory>"),
], ids=["model", "eval-dataset"])
def test_an_id_the_hub_does_not_have_is_told_apart_from_an_unreachable_hub(tmp_path, stand_in_hub,
                                                                           overrides, names, override):
    proc = train(tmp_path, *overrides, check=False, env=hub_env(tmp_path, stand_in_hub))
    name = names.split("'")[1]
    assert_one_message(proc, names, override, f"there is no repository {name!r} on the hub {stand_in_hub}")
    assert_only_local_network(tmp_path)


def test_gated_ids_and_missing_revisions_are_named_with_what_to_do(tmp_path, stand_in_hub):
    code = (
        "from rlhf.config.schema import ModelConfig, SourceConfig\n"
        "from rlhf.data.sources import Source\n"
        "from rlhf.core.errors import RlhfError\n"
        "from rlhf.models.loading import load_tokenizer\n"
        "loads = [lambda: load_tokenizer(ModelConfig(name_or_path='some-org/gated-model')),\n"
        "         lambda: load_tokenizer(ModelConfig(name_or_path='some-org/model', revision='no-such-revision')),\n"
        "         lambda: Source(SourceConfig(path='some-org/gated-data'), key='dataset.extra[0]').hub_dataset()]\n"
        "for load in loads:\n"
        "    try:\n"
        "        load()\n"
        "    except RlhfError as error:\n"
        "        print(error)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=hub_env(tmp_path, stand_in_hub),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gated_model, revision, gated_data = proc.stdout.strip().splitlines()
    assert gated_model.startswith("cannot load the tokenizer 'some-org/gated-model': it is gated on the hub: "
                                  f"accept its terms at {stand_in_hub}/some-org/gated-model"), gated_model
    assert revision.startswith("cannot load the tokenizer 'some-org/model': the hub has no revision "
                               "'no-such-revision' of it"), revision
    assert "model.revision=<branch, tag or commit>" in revision, revision
    assert gated_data.startswith("cannot load the dataset 'some-org/gated-data': it is gated on the hub: accept "
                                 f"its terms at {stand_in_hub}/datasets/some-org/gated-data"), gated_data
    assert gated_data.endswith("Use local data: dataset.extra[0].path=<a local file or directory>"), gated_data
    assert_only_local_network(tmp_path)


def fill_hub_cache(hf_home: Path, repo_id: str, checkpoint: Path) -> None:
    """The Hugging Face cache as a download of `repo_id` leaves it: refs/main names a snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in checkpoint.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_a_model_in_the_local_cache_trains_with_the_hub_unreachable(tmp_path, closed_port):
    from rlhf.assets import asset_path

    fill_hub_cache(tmp_path / "hf", "some-org/tiny-chatml", Path(asset_path("models/tiny-chatml")))
    started = time.monotonic()
    proc = train(tmp_path, "model.name_or_path=some-org/tiny-chatml", "method.max_steps=1", "dataset.num_rows=16",
                 check=False, env=hub_env(tmp_path, f"http://127.0.0.1:{closed_port}"))
    seconds = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "run" / "SUCCESS").exists()
    assert "Retrying" not in out and "thrown while requesting" not in out, out[-3000:]
    assert seconds < 300, seconds
    assert_only_local_network(tmp_path)


def test_the_probe_tells_a_hub_that_answers_from_one_that_refuses_or_stays_silent(closed_port, stand_in_hub,
                                                                                   monkeypatch):
    from huggingface_hub import constants

    from rlhf.core.hub import probe

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as the CLI finds it when it probes
    assert probe(stand_in_hub) is None  # any answer, a 404 included: something is there
    assert probe(f"http://127.0.0.1:{closed_port}") == "Connection refused"
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert probe(f"http://127.0.0.1:{silent.getsockname()[1]}", seconds=1) == "no answer within 1 s"
        assert time.monotonic() - started < 3


def test_library_log_records_are_printed_once():
    """huggingface_hub and datasets add a stderr handler of their own and propagate to the root
    as well: under Hydra each warning (every hub retry) was printed twice."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='%(name)s: %(message)s')\n"
        "from rlhf.job.process import LIBRARY_LOGGERS, route_library_logs\n"
        "route_library_logs()\n"
        "for name in LIBRARY_LOGGERS:\n"
        "    logging.getLogger(name + '.some.module').warning('a warning from %s', name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(CI="1"), capture_output=True,
                          text=True, timeout=300, check=True)
    for name in ("transformers", "huggingface_hub", "datasets"):
        assert (proc.stdout + proc.stderr).count(f"a warning from {name}") == 1, (proc.stdout, proc.stderr)
