"""A real SLURM cluster on localhost, for the tests and for trying sweeps.

    python launchers/slurm_cluster.py start [--nodes N] [--isolation auto|netns|ports] [--dir DIR]
    python launchers/slurm_cluster.py stop [--purge] | status | env [--dir DIR]

`start` installs the Debian packages if a daemon is missing (slurmctld, slurmd, munge,
slurmdbd, mariadb), writes every config under DIR (default /tmp/rlhf-slurm), starts
munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, and waits until every node answers
(idle, or running jobs) and accounting answers (sacct is what tells submitit a cancelled job
is over). A second `start`
of a healthy cluster with the same node count does nothing. `stop` stops exactly the daemons
whose pid files are in DIR (and, for several nodes, what ran in their namespaces), and removes
the namespaces and interfaces it made; DIR itself (configs, logs, the accounting database) is
kept for the post-mortem and a faster next start, unless `--purge`. Clients need SLURM_CONF:
`eval "$(python launchers/slurm_cluster.py env)"`.

Two partitions share the nodes: `debug` (default) and `urgent`, whose jobs preempt debug jobs
by requeueing them (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE), as a busy
cluster does. Standard library only: this runs before the project is installed.

One node (the default) is this host: NodeName=<hostname -s>, NodeAddr=127.0.0.1.

Several nodes (`--nodes N`, N <= 16) on this one host, so that a multi-node job (one rank per
node, a rendezvous across nodes) can run for real. Two ways were tried, in this order:

- netns (chosen, `--isolation netns`): each node is a network namespace of its own
  (`ip netns add rlhf-nodeI`), joined to the host by a veth pair on the bridge rlhf-br0
  (10.250.47.1/24 on the host, node I at 10.250.47.(10+I)), with its own UTS namespace (its
  hostname is its node name) and a mount namespace in which /etc/hosts is bind-mounted from
  DIR/nodes/<node>/hosts (every node and the controller by name). Its slurmd runs there
  (`nsenter --net=... unshare --mount --uts`; not `ip netns exec`, which mounts a fresh /sys
  without /sys/fs/cgroup, where slurmd 22.05 dies: "No filesystem mounted on /sys/fs/cgroup").
  Every job step inherits the namespaces, so a rank sees what it would on a real node: its
  own hostname resolving to its own address, the first node reachable by name and address,
  and gloo binding the node's interface. Filesystems are shared, as a cluster's are. The
  nodes reach each other and the host only (no default route): use local or cached models
  and data in jobs.
- ports (`--isolation ports`): SLURM's multiple-slurmd mode, one `slurmd -N rlhf-nodeI` per
  node with NodeAddr=127.0.0.1 and a Port of its own. Debian's slurmd 22.05 supports it (it
  runs `srun -N2`), but every node then has the same hostname and address (127.0.0.1): a
  rendezvous that picked the wrong address (the launching host's, or loopback) would still
  work, so a multi-node job on it proves little about a real cluster. It is the fallback of
  `--isolation auto` (the default) when namespaces, veth or bridges cannot be made (no
  iproute2, a sandbox without them, the subnet already routed); `status` says which mode runs.

A `start` whose node count (or explicit isolation) differs from the running cluster's
restarts slurmctld and the nodes with the new layout (munge and accounting stay up), after
saying so on stderr, when no job is queued or running; with jobs in the queue it refuses,
naming them. The tests use this: the two-node test switches the cluster to two nodes and
back. The ports are fixed (16817-16819, 16306, 16821+ for multiple-slurmd), so one cluster
runs per machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("RLHF_SLURM_DIR", "/tmp/rlhf-slurm"))
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "munged", "slurmdbd", "mariadbd"]
PARTITIONS = ("debug", "urgent")
CLUSTER = "rlhf"
# The node advertises more CPUs than it has (config_overrides), so a sweep's array tasks run
# side by side on a 2-core machine.
NODE_CPUS = 8

# Several nodes on this host (see the module's docstring).
MAX_NODES = 16
NODE_PREFIX = "rlhf-node"
BRIDGE = "rlhf-br0"
SUBNET = ipaddress.ip_network("10.250.47.0/24")
HOST_ADDR = "10.250.47.1"  # the bridge: where the nodes reach slurmctld and slurmdbd
NODE_PORT = 16820  # multiple-slurmd mode: node I's slurmd listens on NODE_PORT + I
ISOLATIONS = ("auto", "netns", "ports")
SINGLE, NETNS, PORTS = "single", "netns", "ports"
UP = ("idle", "mixed", "allocated", "completing")  # a node's states (sinfo %T) when it answers


class ClusterError(RuntimeError):
    pass


def _run(command: list[str], timeout: float = 60, check: bool = True, env: dict | None = None,
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


class Layout:
    """The nodes of a cluster and how they are kept apart; saved as DIR/run/nodes.json."""

    def __init__(self, mode: str, nodes: list[str], addresses: list[str], note: str = ""):
        self.mode, self.nodes, self.addresses, self.note = mode, nodes, addresses, note

    @property
    def controller(self) -> str:
        """The address the nodes (and every client) reach slurmctld and slurmdbd at."""
        return HOST_ADDR if self.mode == NETNS else "127.0.0.1"

    def fits(self, nodes: int, isolation: str) -> bool:
        if len(self.nodes) != nodes:
            return False
        return nodes == 1 or isolation == "auto" or isolation == self.mode

    def describe(self) -> str:
        where = ", ".join(f"{n} {a}" for n, a in zip(self.nodes, self.addresses))
        how = {SINGLE: "this host", NETNS: "one network namespace each",
               PORTS: "multiple-slurmd on 127.0.0.1"}[self.mode]
        return (f"{len(self.nodes)} node{'s' if len(self.nodes) > 1 else ''} ({how}): {where}"
                + (f"; {self.note}" if self.note else ""))

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "nodes": self.nodes, "addresses": self.addresses,
                           "note": self.note}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Layout":
        data = json.loads(text)
        return cls(data["mode"], list(data["nodes"]), list(data["addresses"]), data.get("note", ""))


class LocalSlurm:
    def __init__(self, directory: str | Path = DEFAULT_DIR):
        self.dir = Path(directory).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.partitions = PARTITIONS

    # ------------------------------------------------------------------ paths and environment
    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @property
    def conf(self) -> Path:
        return self.path("etc", "slurm.conf")

    @property
    def munge_socket(self) -> Path:
        return self.path("run", "munge.socket")

    @property
    def layout_file(self) -> Path:
        return self.path("run", "nodes.json")

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    # ------------------------------------------------------------------ install
    def install(self) -> None:
        missing = [b for b in BINARIES if not self._which(b)]
        if not missing:
            return
        if os.geteuid() != 0:
            raise ClusterError(f"missing {', '.join(missing)} and not root: install {' '.join(PACKAGES)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], timeout=600, env=env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], timeout=1200, env=env)
        still = [b for b in BINARIES if not self._which(b)]
        if still:
            raise ClusterError(f"installed {' '.join(PACKAGES)} but {', '.join(still)} is still missing")

    @staticmethod
    def _which(binary: str) -> str | None:
        return shutil.which(binary) or next((str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/bin") / binary)
                                             if p.exists()), None)

    # ------------------------------------------------------------------ the nodes
    def layout(self) -> Layout | None:
        """The layout the cluster in DIR was started with (None: never started). A cluster
        started before layouts were recorded is the single node."""
        try:
            return Layout.from_json(self.layout_file.read_text())
        except (OSError, ValueError, KeyError):
            return Layout(SINGLE, [self.host], ["127.0.0.1"]) if self.conf.exists() else None

    def _plan(self, nodes: int, isolation: str) -> Layout:
        if nodes == 1:
            return Layout(SINGLE, [self.host], ["127.0.0.1"])
        names = [f"{NODE_PREFIX}{i}" for i in range(1, nodes + 1)]
        if isolation in ("auto", NETNS):
            problem = self._netns_problem()
            if problem is None:
                return Layout(NETNS, names, [str(SUBNET.network_address + 10 + i) for i in range(1, nodes + 1)])
            if isolation == NETNS:
                raise ClusterError(f"--isolation netns: {problem}")
            note = f"not in network namespaces: {problem}"
            print(f"# {note}; the nodes share 127.0.0.1 (multiple-slurmd)", file=sys.stderr)
            return Layout(PORTS, names, ["127.0.0.1"] * nodes, note)
        return Layout(PORTS, names, ["127.0.0.1"] * nodes)

    def _netns_problem(self) -> str | None:
        """Why the nodes cannot have network namespaces here (None: they can), found by doing
        what a node needs once, on a probe: a namespace, a veth pair, a bridge, and a command in
        the namespace with its own hostname and a bind-mounted file."""
        if os.geteuid() != 0:
            return "not root"
        for tool in ("ip", "nsenter", "unshare", "mount", "hostname"):
            if not self._which(tool):
                return f"{tool} is not installed" + (" (Debian package iproute2)" if tool == "ip" else "")
        for line in _run(["ip", "-4", "route", "show"], check=False).stdout.splitlines():
            words = line.split()
            if not words or words[0] == "default" or f"dev {BRIDGE}" in line:
                continue
            try:
                if ipaddress.ip_network(words[0], strict=False).overlaps(SUBNET):
                    return f"{SUBNET} is already routed here ({line.strip()})"
            except ValueError:
                continue
        probe, veth, bridge = "rlhf-probe", "rlhf-probe0", "rlhf-probebr"
        marker = self.path("run", "probe-hosts")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("127.0.0.1\tlocalhost\n")
        inside = ["nsenter", f"--net=/run/netns/{probe}", "unshare", "--mount", "--uts", "sh", "-c",
                  f"mount --bind {shlex.quote(str(marker))} /etc/hosts && hostname {probe} && ip link set lo up"]
        self._remove_probe(probe, veth, bridge)
        try:
            for command in (["ip", "netns", "add", probe],
                            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", probe],
                            ["ip", "link", "add", bridge, "type", "bridge"],
                            ["ip", "link", "set", veth, "master", bridge], inside):
                try:
                    proc = _run(command, check=False, timeout=30)
                except (OSError, subprocess.SubprocessError) as error:
                    return f"`{' '.join(command)}` failed: {error}"
                if proc.returncode != 0:
                    return f"`{' '.join(command)}` failed: {proc.stderr.strip()[-300:]}"
        finally:
            self._remove_probe(probe, veth, bridge)
            marker.unlink(missing_ok=True)
        return None

    def _remove_probe(self, probe: str, veth: str, bridge: str) -> None:
        self._ip("link", "del", bridge)
        self._ip("link", "del", veth)
        self._ip("netns", "del", probe)

    @staticmethod
    def _ip(*args: str) -> subprocess.CompletedProcess:
        """`ip ...` whose failure is no error (removing what may not exist)."""
        return _run(["ip", *args], check=False, timeout=30)

    def _hosts_file(self, node: str) -> Path:
        return self.path("nodes", node, "hosts")

    def _make_network(self, layout: Layout) -> None:
        """The bridge, and per node: a namespace, its veth pair, its address and hosts file."""
        prefix = SUBNET.prefixlen
        steps = [["link", "add", BRIDGE, "type", "bridge"], ["addr", "add", f"{HOST_ADDR}/{prefix}", "dev", BRIDGE],
                 ["link", "set", BRIDGE, "up"]]
        for node, address in zip(layout.nodes, layout.addresses):
            steps += [["netns", "add", node],
                      ["link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", node],
                      ["link", "set", node, "master", BRIDGE, "up"],
                      ["-n", node, "addr", "add", f"{address}/{prefix}", "dev", "eth0"],
                      ["-n", node, "link", "set", "eth0", "up"], ["-n", node, "link", "set", "lo", "up"]]
        for step in steps:
            _run(["ip", *step], timeout=30)
        names = "".join(f"{a}\t{n}\n" for n, a in zip(layout.nodes, layout.addresses))
        for node in layout.nodes:
            hosts = self._hosts_file(node)
            hosts.parent.mkdir(parents=True, exist_ok=True)
            hosts.write_text(f"127.0.0.1\tlocalhost\n{HOST_ADDR}\t{self.host}\n{names}")

    def _remove_network(self, layout: Layout) -> None:
        if layout.mode != NETNS:
            return
        for node in layout.nodes:
            self._end_processes_in(node)
            self._ip("link", "del", node)  # the veth pair: both ends go
            self._ip("netns", "del", node)
        self._ip("link", "del", BRIDGE)
        shutil.rmtree(self.path("nodes"), ignore_errors=True)

    def _end_processes_in(self, namespace: str) -> None:
        """What still runs in a node's namespace once its slurmd stopped: job steps of ours."""
        def pids() -> list[int]:
            out = self._ip("netns", "pids", namespace).stdout.split()
            return [int(p) for p in out if p.isdigit()]

        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            left = pids()
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            started = time.monotonic()
            while pids() and time.monotonic() - started < wait:
                time.sleep(0.2)

    # ------------------------------------------------------------------ configuration
    def _write_configs(self, layout: Layout) -> None:
        for sub in ("etc", "run", "log", "spool/ctld", "spool/d", "state", "mysql", "munge"):
            self.path(*sub.split("/")).mkdir(parents=True, exist_ok=True)
        key = self.path("munge", "munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        memory = self._node_memory()
        if layout.mode == SINGLE:
            node_files = (f"SlurmdSpoolDir={self.path('spool', 'd')}\n"
                          f"SlurmdPidFile={self.path('run', 'slurmd.pid')}\n"
                          f"SlurmdLogFile={self.path('log', 'slurmd.log')}\n")
            node_lines = f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={memory} State=UNKNOWN\n"
        else:  # %n: the node's name, one spool, pid and log file per slurmd
            node_files = (f"SlurmdSpoolDir={self.path('spool', 'd', '%n')}\n"
                          f"SlurmdPidFile={self.path('run', 'slurmd-%n.pid')}\n"
                          f"SlurmdLogFile={self.path('log', 'slurmd-%n.log')}\n")
            node_lines = ""
            for i, (node, address) in enumerate(zip(layout.nodes, layout.addresses), 1):
                where = (f"NodeHostname={node} NodeAddr={address}" if layout.mode == NETNS
                         else f"NodeHostname={self.host} NodeAddr={address} Port={NODE_PORT + i}")
                node_lines += f"NodeName={node} {where} CPUs={NODE_CPUS} RealMemory={memory} State=UNKNOWN\n"
        nodes = ",".join(layout.nodes)
        controller = layout.controller
        self.conf.write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.host}({controller})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=30
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={self.path('state')}
{node_files}SlurmctldPidFile={self.path('run', 'slurmctld.pid')}
SlurmctldLogFile={self.path('log', 'slurmctld.log')}
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={controller}
AccountingStoragePort=16819
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/none
{node_lines}PartitionName=debug Nodes={nodes} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes={nodes} Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
""")
        dbd = self.path("etc", "slurmdbd.conf")
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost={self.host}
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
PidFile={self.path('run', 'slurmdbd.pid')}
LogFile={self.path('log', 'slurmdbd.log')}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=16306
StorageUser=root
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)
        self.path("etc", "my.cnf").write_text(f"""\
[mysqld]
datadir={self.path('mysql')}
socket={self.path('run', 'mysqld.sock')}
port=16306
bind-address=127.0.0.1
pid-file={self.path('run', 'mariadbd.pid')}
log-error={self.path('log', 'mariadb.log')}
user=root
skip-name-resolve
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
""")

    @staticmethod
    def _node_memory() -> int:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return max(1024, int(line.split()[1]) // 1024 - 1024)
        except OSError:
            pass
        return 4096

    # ------------------------------------------------------------------ daemons
    def _pid(self, name: str) -> int | None:
        path = self.path("run", f"{name}.pid")
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    @staticmethod
    def _slurmd(layout: Layout, node: str) -> str:
        """The pid file's name (run/<name>.pid) of a node's slurmd."""
        return "slurmd" if layout.mode == SINGLE else f"slurmd-{node}"

    def _wait(self, what: str, check, timeout: float, log: str | None = None) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if check():
                    return
            except (ClusterError, subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.25)
        tail = ""
        if log and self.path("log", log).exists():
            tail = "\n" + "\n".join(self.path("log", log).read_text(errors="replace").splitlines()[-15:])
        raise ClusterError(f"{what} did not come up within {timeout:.0f} s (logs in {self.path('log')}){tail}")

    def _start_munge(self) -> None:
        if self._pid("munged"):
            return
        _run([self._which("munged"), "--force", f"--socket={self.munge_socket}",
              f"--key-file={self.path('munge', 'munge.key')}", f"--pid-file={self.path('run', 'munged.pid')}",
              f"--log-file={self.path('log', 'munged.log')}", f"--seed-file={self.path('munge', 'seed')}"])
        self._wait("munged", lambda: self.munge_socket.exists() and self._pid("munged"), 30, "munged.log")

    def _start_mariadb(self) -> None:
        if self._pid("mariadbd"):
            return
        cnf = self.path("etc", "my.cnf")
        if not self.path("mysql", "mysql").is_dir():
            installer = self._which("mariadb-install-db") or self._which("mysql_install_db")
            _run([installer, f"--defaults-file={cnf}", "--auth-root-authentication-method=normal",
                  "--skip-test-db"], timeout=300)
        subprocess.Popen([self._which("mariadbd"), f"--defaults-file={cnf}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait("mariadbd", lambda: self.path("run", "mysqld.sock").exists() and self._pid("mariadbd"), 120,
                   "mariadb.log")

    def _start_daemon(self, name: str, *args: str, log: str, command: list[str] | None = None) -> None:
        """Start a daemon unless its pid file names a live process; `command` when it is not
        `<name> <args>` (a slurmd in a node's namespaces)."""
        if self._pid(name):
            return
        env = self.client_env()
        _run(command or [self._which(name), *args], env=env, timeout=60)
        self._wait(name, lambda: self._pid(name), 60, log)

    def _start_node(self, layout: Layout, node: str) -> None:
        slurmd = [self._which("slurmd"), "-f", str(self.conf)]
        if layout.mode == SINGLE:
            self._start_daemon("slurmd", *slurmd[1:], log="slurmd.log")
            return
        name, log = self._slurmd(layout, node), f"slurmd-{node}.log"
        if layout.mode == PORTS:
            self._start_daemon(name, log=log, command=[*slurmd, "-N", node])
            return
        # The node's own hostname (UTS) and /etc/hosts (mount namespace), in its network namespace.
        inner = (f"mount --bind {shlex.quote(str(self._hosts_file(node)))} /etc/hosts && hostname {node} && "
                 f"exec {' '.join(shlex.quote(a) for a in slurmd)} -N {node}")
        self._start_daemon(name, log=log, command=["nsenter", f"--net=/run/netns/{node}", "unshare", "--mount",
                                                   "--uts", "sh", "-c", inner])

    def _daemons_alive(self, layout: Layout) -> bool:
        names = ["munged", "slurmctld", *(self._slurmd(layout, n) for n in layout.nodes)]
        return all(self._pid(d) for d in names)

    def _node_states(self) -> dict[str, str]:
        proc = _run(["sinfo", "-h", "-N", "-o", "%N %T"], env=self.client_env(), timeout=10, check=False)
        return dict(line.split()[:2] for line in proc.stdout.splitlines() if len(line.split()) >= 2)

    def is_up(self) -> bool:
        layout = self.layout()
        if layout is None or not self.conf.exists() or not self._daemons_alive(layout):
            return False
        try:
            ping = _run(["scontrol", "ping"], env=self.client_env(), timeout=10, check=False)
            states = self._node_states()
        except subprocess.SubprocessError:
            return False
        return "UP" in ping.stdout and set(states) == set(layout.nodes) and all(s in UP for s in states.values())

    def _accounting_ready(self) -> bool:
        proc = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=self.client_env(),
                    timeout=15, check=False)
        return CLUSTER in proc.stdout.split()

    def start(self, nodes: int = 1, isolation: str = "auto") -> "LocalSlurm":
        """A running cluster of `nodes` nodes (see the module's docstring for `isolation`)."""
        if not 1 <= nodes <= MAX_NODES:
            raise ClusterError(f"--nodes {nodes}: a local cluster has 1 to {MAX_NODES} nodes")
        if isolation not in ISOLATIONS:
            raise ClusterError(f"--isolation {isolation!r}: choose one of {', '.join(ISOLATIONS)}")
        current = self.layout()
        fits = current is not None and current.fits(nodes, isolation)
        if fits and self.is_up() and self._accounting_ready():
            return self
        # Planned (and probed) before anything stops: a layout that cannot be made leaves the
        # running cluster as it is.
        layout = current if fits else self._plan(nodes, isolation)
        if current is not None and (not fits or current.mode != SINGLE):
            # Another layout, or several nodes not all up: slurmctld and the nodes start afresh.
            if self._pid("slurmctld") and not fits:
                self._require_no_jobs(current, nodes)
                print(f"# the cluster in {self.dir} runs {current.describe()}; restarting slurmctld and the "
                      f"nodes as {layout.describe()}", file=sys.stderr)
            self._stop_slurm(current)
        self.install()
        self.path("run").mkdir(parents=True, exist_ok=True)
        self.layout_file.write_text(layout.to_json())  # first: `stop` then finds what to remove
        if layout.mode == NETNS:  # before any client reads the config that names the bridge's address
            self._remove_network(layout)  # what a killed cluster of the same layout left
            self._make_network(layout)
        self._write_configs(layout)
        self._start_munge()
        self._start_mariadb()
        # slurmdbd has no -f: it reads the slurmdbd.conf beside $SLURM_CONF.
        self._start_daemon("slurmdbd", log="slurmdbd.log")
        self._wait("slurmdbd accounting", self._register_cluster, 60, "slurmdbd.log")
        self._start_daemon("slurmctld", "-f", str(self.conf), log="slurmctld.log")
        for node in layout.nodes:
            self._start_node(layout, node)
        self._wait("the nodes", lambda: self._nodes_idle(layout), 60,
                   "slurmd.log" if layout.mode == SINGLE else f"slurmd-{layout.nodes[-1]}.log")
        return self

    def _require_no_jobs(self, current: Layout, nodes: int) -> None:
        """Wait out jobs that are only completing; refuse to restart under queued or running ones."""
        started = time.monotonic()
        while True:
            proc = _run(["squeue", "-h", "-o", "%i %T"], env=self.client_env(), timeout=15, check=False)
            jobs = [line.split() for line in proc.stdout.splitlines() if line.strip()]
            busy = [f"{j[0]} ({j[1].lower()})" for j in jobs if len(j) > 1 and j[1] != "COMPLETING"]
            if busy:
                raise ClusterError(f"the cluster in {self.dir} runs {current.describe()} and has jobs "
                                   f"{', '.join(busy)}: wait for them (or scancel them) before starting it with "
                                   f"--nodes {nodes}, or `stop` it")
            if not jobs or time.monotonic() - started > 60:
                return
            time.sleep(0.5)

    def _register_cluster(self) -> bool:
        if self._accounting_ready():
            return True
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env=self.client_env(), timeout=15, check=False)
        return self._accounting_ready()

    def _nodes_idle(self, layout: Layout) -> bool:
        env = self.client_env()
        states = self._node_states()
        down = [n for n, s in states.items() if s.startswith(("down", "drain"))]
        if down:
            _run(["scontrol", "update", f"nodename={','.join(down)}", "state=resume"], env=env, check=False)
        return set(states) == set(layout.nodes) and all(s in UP for s in states.values())

    def _stop_pid(self, name: str) -> None:
        pid = self._pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        started = time.monotonic()
        while self._pid(name) and time.monotonic() - started < 30:
            time.sleep(0.2)
        if self._pid(name):
            os.kill(pid, signal.SIGKILL)

    def _stop_slurm(self, layout: Layout) -> None:
        """slurmctld and the nodes (with their namespaces); munge and accounting stay up."""
        for node in layout.nodes:
            self._stop_pid(self._slurmd(layout, node))
        self._stop_pid("slurmctld")
        self._remove_network(layout)
        self.layout_file.unlink(missing_ok=True)

    def stop(self, purge: bool = False) -> None:
        layout = self.layout()
        if layout is not None:
            self._stop_slurm(layout)
        self._stop_pid("slurmd")  # a single node started by an older version of this script
        for name in ("slurmctld", "slurmdbd", "mariadbd", "munged"):
            self._stop_pid(name)
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ helpers for tests
    def sacct_state(self, job_id: str, timeout: float = 60) -> str:
        """The accounting state of a job (sacct trails squeue by a second or so)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            proc = _run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"], env=self.client_env(),
                        timeout=15, check=False)
            states = [s.split()[0] for s in proc.stdout.split("\n") if s.strip()]
            if states and not any(s in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING") for s in states):
                return states[0]
            time.sleep(0.5)
        raise ClusterError(f"job {job_id} did not end within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A SLURM cluster on localhost (one node, or several), for tests.")
    parser.add_argument("action", choices=("start", "stop", "status", "env"))
    parser.add_argument("--dir", default=str(DEFAULT_DIR))
    parser.add_argument("--nodes", type=int, default=1, help=f"start: compute nodes, 1 to {MAX_NODES} (default 1)")
    parser.add_argument("--isolation", choices=ISOLATIONS, default="auto",
                        help="start, several nodes: a network namespace per node (netns), multiple-slurmd on "
                             "127.0.0.1 (ports), or netns when this machine allows it (auto)")
    parser.add_argument("--purge", action="store_true", help="stop: remove DIR too (configs, logs, database)")
    args = parser.parse_args(argv)
    cluster = LocalSlurm(args.dir)
    try:
        if args.action == "start":
            started = time.monotonic()
            cluster.start(args.nodes, args.isolation)
            print(f"# SLURM up in {time.monotonic() - started:.1f} s; partitions {', '.join(cluster.partitions)}; "
                  f"{cluster.layout().describe()}", file=sys.stderr)
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.action == "stop":
            cluster.stop(purge=args.purge)
        elif args.action == "status":
            up = cluster.is_up()
            print("up" if up else "down")
            if up:
                print(f"# {cluster.layout().describe()}", file=sys.stderr)
            sys.exit(0 if up else 1)
        else:
            print(f"export SLURM_CONF={cluster.conf}")
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
