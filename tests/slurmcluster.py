"""A real SLURM cluster on this machine for the tests: munge, slurmctld, two slurmd "nodes".

Debian's own packages (installed when missing, as root), a private slurm.conf and state in a
temporary folder, daemons on unusual ports, `SLURM_CONF` pointing clients at it. `stop()`
ends only what `start()` started, by the PIDs it recorded.

As like a real cluster as one machine allows: each node has the machine's 2 CPUs and binds
tasks to them (task/affinity, no cgroups needed), and a TaskProlog gives every job a
node-local $TMPDIR (removed by the Epilog), as Snellius does on /scratch-node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
NODES = ("n1", "n2")
CTLD_PORT, NODE_PORT = 16817, 17001


class SlurmUnavailable(RuntimeError):
    pass


def stop_stale_daemons() -> None:
    """Daemons a killed test session left running hold our ports: without this the next session's
    cluster would not start and the whole SLURM tier would be skipped. Only daemons of a test cluster
    (a slurm.conf under a pytest folder) are stopped; a site's own SLURM is never touched."""
    found = subprocess.run(["pgrep", "-af", "^(slurmctld|slurmd) -f /tmp/pytest-of-"], capture_output=True, text=True)
    pids = [int(line.split()[0]) for line in found.stdout.splitlines() if "/etc/slurm.conf" in line]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while pids and time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)


def ensure_installed() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("SLURM is not installed and installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")


class LocalSlurm:
    def __init__(self, root: Path, cpus_per_node: int = 2, memory_mb: int = 8000) -> None:
        self.root, self.cpus, self.memory = root, cpus_per_node, memory_mb
        self.conf = root / "etc" / "slurm.conf"
        self.pids: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc

    def _write_scripts(self) -> None:
        r = self.root
        tmp = f"{r}/spool/$SLURMD_NODENAME/tmp/job$SLURM_JOB_ID"
        (r / "etc" / "task_prolog.sh").write_text(f'#!/bin/sh\nmkdir -p "{tmp}"\necho "export TMPDIR={tmp}"\n')
        (r / "etc" / "epilog.sh").write_text(f'#!/bin/sh\nrm -rf "{tmp}"\n')
        for name in ("task_prolog.sh", "epilog.sh"):
            (r / "etc" / name).chmod(0o755)

    def _write_conf(self) -> None:
        r, host = self.root, socket.gethostname().split(".")[0]
        for d in ("etc", "state", *(f"spool/{n}/tmp" for n in NODES)):
            (r / d).mkdir(parents=True, exist_ok=True)
        self._write_scripts()
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={NODE_PORT + i} CPUs={self.cpus} "
            f"RealMemory={self.memory} State=UNKNOWN"
            for i, n in enumerate(NODES)
        )
        self.conf.write_text(f"""ClusterName=hpmltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={CTLD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again only when its old credential has expired (default 120 s):
# SLURM holds it back that long by itself. Forcing it earlier (scontrol update StartTime=now)
# makes the new step's launch fail ("launch failed: Unspecified error") and srun exit 0.
AuthInfo=cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
TmpFS={r}/spool/%n/tmp
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
TaskProlog={r}/etc/task_prolog.sh
Epilog={r}/etc/epilog.sh
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=pmix
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
MailProg=/bin/true
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc={r}/jobcomp.txt
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munge(self) -> None:
        if subprocess.run(["sh", "-c", "munge -n | unmunge"], capture_output=True).returncode == 0:
            return  # a munged is already serving; not ours to stop
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=True)
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        self.pids["munged"] = int(Path("/run/munge/munged.pid").read_text())

    def start(self, timeout: float = 60) -> LocalSlurm:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # whatever did start must not outlive the test session
            raise

    def _start(self, timeout: float) -> LocalSlurm:
        ensure_installed()
        stop_stale_daemons()
        self._write_conf()
        self._start_munge()
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env)
        self.pids["slurmctld"] = self._pid(self.root / "slurmctld.pid")
        for n in NODES:
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", n], check=True, env=self.env)
            self.pids[f"slurmd-{n}"] = self._pid(self.root / f"slurmd-{n}.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
            if states.count("idle") == len(NODES):
                return self
            time.sleep(0.5)
        raise SlurmUnavailable(f"nodes not idle after {timeout}s: {states}; see {self.root}/slurmctld.log")

    @staticmethod
    def _pid(path: Path, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"{path} did not appear")
            time.sleep(0.1)
        return int(path.read_text())

    def stop(self) -> None:
        self.run("scancel", "--full", "-u", "root", check=False)
        deadline = time.monotonic() + 60  # let slurmstepd finish while the daemons are up
        while (
            time.monotonic() < deadline
            and subprocess.run(["pgrep", "-f", "slurmstepd"], stdout=subprocess.DEVNULL).returncode == 0
        ):
            time.sleep(0.5)
        for name in ["slurmd-n2", "slurmd-n1", "slurmctld", "munged"]:
            pid = self.pids.pop(name, None)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        time.sleep(1)

    # ---- job helpers for tests ----
    def job(self, job_id: str) -> dict[str, str]:
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait(
        self, job_id: str, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), timeout: float = 900
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout}s")


def poll(predicate, what: str, timeout: float = 300, every: float = 0.5):
    """Wait for `predicate()` to return something true; that value, or an assertion naming `what`."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)
    return value
