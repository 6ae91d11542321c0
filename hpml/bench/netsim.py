"""Two "nodes" on one machine: network namespaces joined by a shaped veth link, and MPI across them.

    with Network(rate_gbit=1.0) as net:                      # needs root and iproute2
        subprocess.run(net.mpirun([sys.executable, "job.py"], ranks_per_node=1), env=...)
        print(net.counters())                                 # bytes that crossed the link

Each node is a network namespace `hpml<pid>n<i>` whose only interfaces are `lo` and `hpml0`, one
end of a veth pair whose other end is the other node's `hpml0` (10.99.0.1 and .2). Nothing else
is reachable from inside, so every byte between the nodes crosses the link and is counted there.
Each end shapes its egress with a token bucket (`tc tbf`): `rate_gbit` per direction, full duplex.
Latency needs `netem` (`delay_ms`); kernels without it (this machine's) are refused with a message.

Ranks are launched the way a cluster launches them: `mpirun` runs on node 0 and starts Open MPI's
daemon on node 1 through an rsh agent (`ip netns exec` + a UTS namespace that carries the node's
host name), with a hostfile of host names that resolve, inside the nodes, to the link addresses
(`/etc/netns/<netns>/hosts`). Open MPI (btl and oob) and Gloo (HOROVOD_GLOO_IFACE) are restricted
to `hpml0`. With `transport="gloo"` Horovod moves tensors with Gloo, rendezvousing through a
server on node 0, as `horovodrun --gloo` does.

Cleanup always runs: on leaving the `with` block, on SIGTERM/SIGINT while inside it, and for
namespaces left by a process that was SIGKILLed, at the next `Network()` (`cleanup_stale`).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from hpml.parallel.distributed import gloo_rendezvous

IFACE = "hpml0"
SUBNET = "10.99.0"  # exists only inside our namespaces: the host's own routes never see it
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*
_NAME = re.compile(r"^hpml(\d+)n\d+$")


class NetsimError(RuntimeError):
    """The emulated network cannot be built or shaped here."""


@dataclass(frozen=True)
class Node:
    index: int
    netns: str
    host: str
    ip: str


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetsimError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_netns(name: str) -> None:
    """Kill what still runs inside (only our own launches live there), then drop the namespace."""
    pids = _sh("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _sh("ip", "netns", "del", name, check=False)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def cleanup_stale() -> list[str]:
    """Remove namespaces whose creating process is gone (e.g. SIGKILLed). Returns their names."""
    names = [line.split()[0] for line in _sh("ip", "netns", "list", check=False).stdout.splitlines() if line]
    stale = [n for n in names if (m := _NAME.match(n)) and not _alive(int(m.group(1)))]
    for name in stale:
        _delete_netns(name)
    return stale


def existing() -> list[str]:
    """Names of all hpml network namespaces on this machine."""
    out = _sh("ip", "netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in out if line and _NAME.match(line.split()[0])]


def tbf(rate_gbit: float) -> list[str]:
    """`tc` arguments of the token bucket for `rate_gbit` (per direction)."""
    rate = rate_gbit * 1e9 / 8  # bytes/s
    # A bucket of 1 ms of traffic (at least 128 KiB, so TSO bursts pass whole) and a queue of
    # 10 ms: the token rate, not drops, sets the pace.
    burst, limit = max(128 * 1024, int(rate * 1e-3)), max(1 << 20, int(rate * 1e-2))
    return ["tbf", "rate", f"{rate_gbit}gbit", "burst", str(burst), "limit", str(limit)]


def shape_here(rate_gbit: float | None) -> None:
    """From inside a node (a rank): shape this node's egress on the link; None removes the shaper.

    Each node shapes what it sends, so a job can change the link between phases without
    leaving MPI; `Network.shape` does the same from outside.
    """
    _sh("tc", "qdisc", "del", "dev", IFACE, "root", check=False)
    if rate_gbit:
        _sh("tc", "qdisc", "add", "dev", IFACE, "root", "handle", "2:", *tbf(rate_gbit))


class Network:
    """Two namespaces joined by one veth link, shaped per direction. Use as a context manager."""

    def __init__(self, rate_gbit: float | None = None, delay_ms: float = 0.0, mtu: int = 1500) -> None:
        self.rate_gbit, self.delay_ms, self.mtu = rate_gbit, delay_ms, mtu
        tag = f"hpml{os.getpid()}"
        self.nodes = [Node(i, f"{tag}n{i}", f"{tag}-n{i}", f"{SUBNET}.{i + 1}") for i in range(2)]
        self.dir: Path | None = None
        self._handlers: dict[int, object] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Network:
        self._trap_signals()
        atexit.register(self.destroy)  # also when used without `with`
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def create(self) -> None:
        if os.geteuid() != 0:
            raise NetsimError("network namespaces need root (ip netns add)")
        if not shutil.which("ip") or not shutil.which("tc"):
            raise NetsimError("iproute2 (ip, tc) is not installed")
        cleanup_stale()
        self.dir = Path(tempfile.mkdtemp(prefix="hpml-netsim-"))
        a, b = self.nodes
        for node in self.nodes:
            _sh("ip", "netns", "add", node.netns)
        # Temporary names in the root namespace, renamed to IFACE inside each node.
        _sh(*f"ip link add {a.netns}x mtu {self.mtu} type veth peer name {b.netns}x mtu {self.mtu}".split())
        hosts = "127.0.0.1 localhost\n" + "".join(f"{n.ip} {n.host}\n" for n in self.nodes)
        for node in self.nodes:
            ns = ("ip", "-n", node.netns)
            _sh("ip", "link", "set", f"{node.netns}x", "netns", node.netns)
            _sh(*ns, "link", "set", f"{node.netns}x", "name", IFACE)
            _sh(*ns, "addr", "add", f"{node.ip}/24", "dev", IFACE)
            _sh(*ns, "link", "set", IFACE, "up")
            _sh(*ns, "link", "set", "lo", "up")
            (NETNS_ETC / node.netns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / node.netns / "hosts").write_text(hosts)
        self._write_scripts()
        self.shape(self.rate_gbit, self.delay_ms)

    def destroy(self) -> None:
        for node in self.nodes:
            _delete_netns(node.netns)
        _sh("ip", "link", "del", f"{self.nodes[0].netns}x", check=False)  # only if creation stopped halfway
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self._restore_signals()
        atexit.unregister(self.destroy)

    def _trap_signals(self) -> None:
        """SIGTERM/SIGINT become exceptions, so `with` unwinds and the namespaces go away."""
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, frame):
            self.destroy()
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._handlers[sig] = signal.signal(sig, stop)

    def _restore_signals(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers.clear()

    # -- shaping and counters ----------------------------------------------------------------
    def shape(self, rate_gbit: float | None, delay_ms: float = 0.0) -> None:
        """Token bucket of `rate_gbit` per direction (None: unshaped), plus `delay_ms` via netem."""
        self.rate_gbit, self.delay_ms = rate_gbit, delay_ms
        for node in self.nodes:
            tc = ("ip", "netns", "exec", node.netns, "tc", "qdisc")
            _sh(*tc, "del", "dev", IFACE, "root", check=False)
            parent = ("root",)
            if delay_ms:
                proc = _sh(
                    *tc, "add", "dev", IFACE, "root", "handle", "1:", "netem", "delay", f"{delay_ms}ms", check=False
                )
                if proc.returncode != 0:
                    raise NetsimError(f"latency needs the netem qdisc, which this kernel lacks ({proc.stderr.strip()})")
                parent = ("parent", "1:")
            if rate_gbit:
                _sh(*tc, "add", "dev", IFACE, *parent, "handle", "2:", *tbf(rate_gbit))

    def counters(self) -> dict[str, dict[str, int]]:
        """Bytes and packets each node sent and received on the link (kernel counters)."""
        out = {}
        for node in self.nodes:
            stats = f"/sys/class/net/{IFACE}/statistics"
            names = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")
            text = _sh("ip", "netns", "exec", node.netns, "cat", *(f"{stats}/{n}" for n in names)).stdout
            out[node.host] = dict(zip(names, map(int, text.split()), strict=True))
        return out

    def qdisc(self) -> str:
        """`tc -s qdisc` of both ends: what the shaper sent, dropped and delayed."""
        return "".join(
            _sh("ip", "netns", "exec", n.netns, "tc", "-s", "qdisc", "show", "dev", IFACE).stdout for n in self.nodes
        )

    def exec(self, node: int, argv: list[str]) -> list[str]:
        """A command line that runs `argv` on `node` (its namespace and host name)."""
        n = self.nodes[node]
        return [
            "ip",
            "netns",
            "exec",
            n.netns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            f'hostname {n.host} && exec "$@"',
            "sh",
            *argv,
        ]

    # -- launching ---------------------------------------------------------------------------
    def _write_scripts(self) -> None:
        assert self.dir
        cases = "".join(f"  {n.host}) ns={n.netns} ;;\n" for n in self.nodes)
        # Open MPI calls AGENT [options] HOST COMMAND...; the command is a shell line, as over ssh.
        agent = self.dir / "rsh-agent"
        agent.write_text(
            "#!/bin/sh\n"
            'while [ "${1#-}" != "$1" ]; do shift; done\n'
            "host=$1; shift\ncase $host in\n" + cases + '  *) echo "netsim: unknown host $host" >&2; exit 1 ;;\n'
            "esac\n"
            'exec ip netns exec "$ns" unshare --uts /bin/sh -c "hostname $host && $*"\n'
        )
        # Gloo needs each rank's place from the launcher (horovodrun sets these per slot).
        rank = self.dir / "gloo-rank"
        rank.write_text(
            "#!/bin/sh\n"
            "h=$(hostname)\n"
            "export HOROVOD_RANK=$OMPI_COMM_WORLD_RANK HOROVOD_SIZE=$OMPI_COMM_WORLD_SIZE \\\n"
            "  HOROVOD_LOCAL_RANK=$OMPI_COMM_WORLD_LOCAL_RANK HOROVOD_LOCAL_SIZE=$OMPI_COMM_WORLD_LOCAL_SIZE \\\n"
            f"  HOROVOD_CROSS_RANK=${{h##*-n}} HOROVOD_CROSS_SIZE={len(self.nodes)} HOROVOD_HOSTNAME=$h\n"
            'exec "$@"\n'
        )
        agent.chmod(0o755)
        rank.chmod(0o755)

    def mpirun(
        self,
        argv: list[str],
        ranks_per_node: int = 1,
        transport: str = "mpi",
        env: dict[str, str] | None = None,
        tcp_links: int = 2,
    ) -> list[str]:
        """Command line (run it from the host) that starts `argv` on both nodes under mpirun.

        Ranks 0..k-1 run on node 0, k..2k-1 on node 1. `env` is exported to every rank (-x).
        transport "mpi": Horovod allreduces with MPI (Open MPI's TCP BTL over the link);
        "gloo": with Gloo, rendezvousing through a server that `hpml.bench.netsim gloo` runs on node 0.
        `tcp_links`: TCP connections between each pair of ranks (Open MPI's btl_tcp_links).
        """
        assert self.dir, "create() the network first"
        hostfile = self.dir / "hostfile"
        hostfile.write_text("".join(f"{n.host} slots={ranks_per_node}\n" for n in self.nodes))
        env = dict(env or {})
        if transport == "gloo":
            env.update(HOROVOD_GLOO_IFACE=IFACE, HOROVOD_GLOO_RENDEZVOUS_ADDR=self.nodes[0].ip)
            env.update(HOROVOD_CONTROLLER="gloo", HOROVOD_CPU_OPERATIONS="gloo")
        elif transport != "mpi":
            raise ValueError(f"transport: mpi or gloo, not {transport!r}")
        cmd = [
            "mpirun",
            "--hostfile",
            str(hostfile),
            "-np",
            str(ranks_per_node * len(self.nodes)),
            "--mca",
            "plm_rsh_agent",
            str(self.dir / "rsh-agent"),
            "--mca",
            "plm_rsh_no_tree_spawn",
            "1",
            "--mca",
            "btl",
            "self,vader,tcp",
            "--mca",
            "btl_tcp_if_include",
            IFACE,
            "--mca",
            "oob_tcp_if_include",
            IFACE,
            # Two TCP connections per pair of ranks: over one, Open MPI 4.1's TCP BTL moves one
            # direction at a time (measured here at 0.5 Gbit/s: MPI_Sendrecv of 8-512 MiB took
            # 2.00x a one-way send, Isend/Irecv 1x or 2x at random, while two Python threads on
            # one raw TCP socket took 1.01x); with two, 1.00-1.12x in a plain MPI job.
            "--mca",
            "btl_tcp_links",
            str(tcp_links),
            # The "nodes" share this machine's cores: a rank waiting in MPI must yield them,
            # not spin (Open MPI spins when a node's slots are not oversubscribed) ...
            "--mca",
            "mpi_yield_when_idle",
            "1",
            # ... and must not be pinned: each node's daemon binds its first rank to core 0,
            # so both nodes' ranks would share one core (steps measured 2x slower).
            "--bind-to",
            "none",
        ]
        for key, value in env.items():
            cmd += ["-x", f"{key}={value}"]
        if transport == "gloo":
            slots = ",".join(f"{n.host}:{ranks_per_node}" for n in self.nodes)
            cmd += ["-x", "HOROVOD_GLOO_RENDEZVOUS_PORT", str(self.dir / "gloo-rank")]
            launcher = [sys.executable, "-m", "hpml.bench.netsim", "gloo", slots, "--"]
            return self.exec(0, [*launcher, *cmd, *argv])
        return self.exec(0, [*cmd, *argv])


def _gloo_main(slots: str, cmd: list[str]) -> int:
    """On node 0: Horovod's rendezvous server for `slots`, then `cmd` with its port exported."""
    with gloo_rendezvous(slots) as port:
        return subprocess.call(cmd, env=dict(os.environ, HOROVOD_GLOO_RENDEZVOUS_PORT=str(port)))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "gloo" and sys.argv[3] == "--":
        sys.exit(_gloo_main(sys.argv[2], sys.argv[4:]))
    sys.exit("usage: python -m hpml.bench.netsim gloo HOST:SLOTS,... -- COMMAND...")
