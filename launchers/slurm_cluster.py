"""A real single-node SLURM cluster on localhost, for the tests and for trying sweeps.

    python launchers/slurm_cluster.py start|stop|status|env [--dir DIR]

`start` installs the Debian packages if a daemon is missing (slurmctld, slurmd, munge,
slurmdbd, mariadb), writes every config under DIR (default /tmp/rlhf-slurm), starts
munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, and waits until the node is idle and
accounting answers (sacct is what tells submitit a cancelled job is over). A second `start`
of a healthy cluster does nothing. `stop` stops exactly the daemons whose pid files are in
DIR. Clients need SLURM_CONF: `eval "$(python launchers/slurm_cluster.py env)"`.

Two partitions share the node: `debug` (default) and `urgent`, whose jobs preempt debug jobs
by requeueing them (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE), as a busy
cluster does. Standard library only: this runs before the project is installed.
"""

from __future__ import annotations

import argparse
import os
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


class ClusterError(RuntimeError):
    pass


def _run(command: list[str], timeout: float = 60, check: bool = True, env: dict | None = None,
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


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

    # ------------------------------------------------------------------ configuration
    def _write_configs(self) -> None:
        for sub in ("etc", "run", "log", "spool/ctld", "spool/d", "state", "mysql", "munge"):
            self.path(*sub.split("/")).mkdir(parents=True, exist_ok=True)
        key = self.path("munge", "munge.key")
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        memory = self._node_memory()
        self.conf.write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
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
SlurmdSpoolDir={self.path('spool', 'd')}
SlurmctldPidFile={self.path('run', 'slurmctld.pid')}
SlurmdPidFile={self.path('run', 'slurmd.pid')}
SlurmctldLogFile={self.path('log', 'slurmctld.log')}
SlurmdLogFile={self.path('log', 'slurmd.log')}
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/none
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes={self.host} Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
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

    def _start_daemon(self, name: str, *args: str, log: str) -> None:
        if self._pid(name):
            return
        env = self.client_env()
        binary = self._which(name)
        _run([binary, *args], env=env, timeout=60)
        self._wait(name, lambda: self._pid(name), 60, log)

    def is_up(self) -> bool:
        if not self.conf.exists() or not all(self._pid(d) for d in ("munged", "slurmctld", "slurmd")):
            return False
        try:
            ping = _run(["scontrol", "ping"], env=self.client_env(), timeout=10, check=False)
            state = _run(["sinfo", "-h", "-N", "-o", "%T"], env=self.client_env(), timeout=10, check=False)
        except subprocess.SubprocessError:
            return False
        states = set(state.stdout.split())
        return "UP" in ping.stdout and bool(states) and states <= {"idle", "mixed", "allocated", "completing"}

    def _accounting_ready(self) -> bool:
        proc = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=self.client_env(),
                    timeout=15, check=False)
        return CLUSTER in proc.stdout.split()

    def start(self) -> "LocalSlurm":
        if self.is_up() and self._accounting_ready():
            return self
        self.install()
        self._write_configs()
        self._start_munge()
        self._start_mariadb()
        # slurmdbd has no -f: it reads the slurmdbd.conf beside $SLURM_CONF.
        self._start_daemon("slurmdbd", log="slurmdbd.log")
        self._wait("slurmdbd accounting", self._register_cluster, 60, "slurmdbd.log")
        self._start_daemon("slurmctld", "-f", str(self.conf), log="slurmctld.log")
        self._start_daemon("slurmd", "-f", str(self.conf), log="slurmd.log")
        self._wait("the node", self._node_idle, 60, "slurmd.log")
        return self

    def _register_cluster(self) -> bool:
        if self._accounting_ready():
            return True
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env=self.client_env(), timeout=15, check=False)
        return self._accounting_ready()

    def _node_idle(self) -> bool:
        env = self.client_env()
        state = _run(["sinfo", "-h", "-N", "-o", "%T"], env=env, timeout=10, check=False).stdout.split()
        if state and all(s.startswith(("down", "drain")) for s in state):
            _run(["scontrol", "update", f"nodename={self.host}", "state=resume"], env=env, check=False)
        return "idle" in state

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            pid = self._pid(name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            started = time.monotonic()
            while self._pid(name) and time.monotonic() - started < 30:
                time.sleep(0.2)
            if self._pid(name):
                os.kill(pid, signal.SIGKILL)

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
    parser = argparse.ArgumentParser(description="A single-node SLURM cluster on localhost, for tests.")
    parser.add_argument("action", choices=("start", "stop", "status", "env"))
    parser.add_argument("--dir", default=str(DEFAULT_DIR))
    args = parser.parse_args(argv)
    cluster = LocalSlurm(args.dir)
    try:
        if args.action == "start":
            started = time.monotonic()
            cluster.start()
            print(f"# SLURM up in {time.monotonic() - started:.1f} s; partitions {', '.join(cluster.partitions)}",
                  file=sys.stderr)
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.action == "stop":
            cluster.stop()
        elif args.action == "status":
            up = cluster.is_up()
            print("up" if up else "down")
            sys.exit(0 if up else 1)
        else:
            print(f"export SLURM_CONF={cluster.conf}")
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
