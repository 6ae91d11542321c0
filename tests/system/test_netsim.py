"""The 2-node network on one machine (hpml.bench.netsim): training across it, shaping, cleanup.

Needs root and iproute2 (network namespaces, veth, tc); skipped otherwise.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import MPI_ENV, REPO

from hpml.bench import netsim
from hpml.bench.netsim import NetsimError, Network

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"), reason="needs root and iproute2"
)
DEMO = REPO / "configs" / "demo.yaml"


def ours(pid: int) -> list[str]:
    return [n for n in netsim.existing() if n.startswith(f"hpml{pid}n")]


def leftovers(pid: int) -> list[str]:
    """Anything a network of process `pid` could leave behind: namespaces, /etc/netns, veths."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    etc = [p.name for p in netsim.NETNS_ETC.glob(f"hpml{pid}n*")] if netsim.NETNS_ETC.is_dir() else []
    return ours(pid) + etc + re.findall(rf"hpml{pid}n\dx", links)


@pytest.fixture(scope="module")
def shards(small_data):
    return small_data / "shards"


def test_two_node_training_sends_its_gradients_over_the_shaped_link(shards, tmp_path):
    import numpy as np

    from hpml.core.config import load_config
    from hpml.models.build import build_model

    steps = 6
    grad_bytes = 4 * sum(int(np.prod(v.shape)) for v in build_model(load_config(DEMO).model, 64).trainable_variables)
    with Network(rate_gbit=0.2) as net:
        before = net.counters()
        train = [
            sys.executable,
            "-m",
            "hpml.cli",
            "train",
            "--config",
            str(DEMO),
            "--shards",
            str(shards),
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "train.epochs=1",
            "--set",
            f"train.steps_per_epoch={steps}",
        ]
        proc = subprocess.run(
            net.mpirun(train), env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=600
        )
        after = net.counters()
        shaper = net.qdisc()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    done = re.findall(r"\[(\d)/2\] INFO hpml.train.loop: training done; weights sha256 (\w+)", log)
    assert sorted(r for r, _ in done) == ["0", "1"] and len({d for _, d in done}) == 1
    for host in after:  # a ring allreduce of B bytes over 2 ranks sends B from each rank
        sent = after[host]["tx_bytes"] - before[host]["tx_bytes"]
        assert sent >= steps * grad_bytes, (host, sent, steps * grad_bytes)
    # ... and it went through the token bucket on both ends
    sent_by_tbf = [int(n) for n in re.findall(r"Sent (\d+) bytes", shaper)]
    assert len(sent_by_tbf) == 2 and min(sent_by_tbf) >= steps * grad_bytes, shaper
    assert not leftovers(os.getpid())


def test_gloo_transport_crosses_the_link_too():
    script = (
        "import horovod.tensorflow as hvd, tensorflow as tf; hvd.init(); "
        "x = hvd.allreduce(tf.ones([2**18]), op=hvd.Sum); "
        "print('rank', hvd.rank(), 'of', hvd.size(), 'sum', float(x[0]), flush=True)"
    )
    with Network(rate_gbit=1.0) as net:
        before = net.counters()
        proc = subprocess.run(
            net.mpirun([sys.executable, "-c", script], transport="gloo"),
            env={**os.environ, **MPI_ENV},
            capture_output=True,
            text=True,
            timeout=300,
        )
        after = net.counters()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(re.findall(r"rank (\d) of 2 sum 2.0", proc.stdout)) == ["0", "1"]
    assert all(after[h]["tx_bytes"] - before[h]["tx_bytes"] >= 2**20 for h in after)  # 1 MiB each way


def test_the_shaper_sets_the_rate():
    nbytes = 2_500_000  # 20 Mbit: 0.4 s at 50 Mbit/s, milliseconds unshaped
    server = (
        "import socket; s = socket.socket(); s.bind(('0.0.0.0', 5999)); s.listen(1); c, _ = s.accept(); n = 0\n"
        f"while n < {nbytes}: n += len(c.recv(1 << 16))\nc.sendall(b'k')"
    )
    client = (
        "import socket, sys, time; c = socket.create_connection((sys.argv[1], 5999)); t = time.perf_counter(); "
        f"c.sendall(bytes({nbytes})); c.recv(1); print(time.perf_counter() - t)"
    )
    with Network(rate_gbit=0.05) as net:
        srv = subprocess.Popen(net.exec(1, [sys.executable, "-c", server]))
        time.sleep(0.5)
        out = subprocess.run(
            net.exec(0, [sys.executable, "-c", client, net.nodes[1].ip]), capture_output=True, text=True, timeout=60
        )
        srv.wait(timeout=60)
        sent = net.counters()[net.nodes[0].host]["tx_bytes"]
    seconds = float(out.stdout)
    assert seconds >= 0.9 * nbytes * 8 / 50e6, seconds  # the bucket's rate, not the veth's
    assert sent >= nbytes


EXCHANGE = """
import os, sys, time
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
rank, peer, n = comm.Get_rank(), 1 - comm.Get_rank(), int(sys.argv[1])
buf, got, grads = np.ones(n, np.uint8), np.empty(n, np.uint8), np.ones(n // 4, np.float32)
def timed(fn, repeats):
    best = []
    for _ in range(repeats):
        comm.Barrier(); t = time.perf_counter(); fn(); comm.Barrier(); best.append(time.perf_counter() - t)
    return min(best)
one = timed(lambda: comm.Send(buf, peer) if rank == 0 else comm.Recv(got, peer), 2)
both = timed(lambda: comm.Allreduce(MPI.IN_PLACE, grads), 3)
print(f"rank {rank} cores {sorted(os.sched_getaffinity(0))} one-way {one:.3f} allreduce {both:.3f}", flush=True)
"""


def test_mpi_ranks_on_the_two_nodes_send_both_ways_at_once_and_are_not_pinned_to_one_core():
    """Real nodes send and receive at once and have their own cores; the emulation must too, or
    the allreduces and steps it measures are up to 2x off (both were, before). For 2 ranks an
    allreduce of B bytes sends B each way: with both directions at once, ~ a one-way send of B."""
    nbytes = 16 * 2**20  # 1.4 s one way at 0.1 Gbit/s
    with Network(rate_gbit=0.1) as net:
        proc = subprocess.run(
            net.mpirun([sys.executable, "-c", EXCHANGE, str(nbytes)]),
            env={**os.environ, **MPI_ENV},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = re.findall(r"rank (\d) cores (\[[\d, ]*\]) one-way ([\d.]+) allreduce ([\d.]+)", proc.stdout)
    assert len(ranks) == 2, proc.stdout + proc.stderr
    for _, cores, one, both in ranks:
        cores = [int(c) for c in re.findall(r"\d+", cores)]
        assert cores == sorted(os.sched_getaffinity(0)), cores  # the machine's cores, not core 0 twice
        assert float(one) >= 0.9 * nbytes * 8 / 0.1e9  # the link's rate sets the pace
        assert float(both) < 1.4 * float(one), (one, both)  # full duplex: ~1x, not 2x


def test_latency_needs_netem():
    try:
        with Network(delay_ms=1.0):
            pass  # this kernel has netem: nothing to check here beyond a clean build
    except NetsimError as exc:
        assert "netem" in str(exc)
    assert not leftovers(os.getpid())


def test_cleanup_after_an_error_a_sigterm_and_a_sigkill():
    with pytest.raises(RuntimeError, match="boom"), Network(rate_gbit=1.0):
        assert len(ours(os.getpid())) == 2
        raise RuntimeError("boom")
    assert not leftovers(os.getpid())

    hold = (
        "from hpml.bench.netsim import Network; import time; n = Network().__enter__(); print('up', flush=True); "
        "time.sleep(120)"
    )
    for sig in (signal.SIGTERM, signal.SIGKILL):
        child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "up"
        assert len(ours(child.pid)) == 2
        child.send_signal(sig)
        child.wait(timeout=60)
        if sig == signal.SIGTERM:  # trapped: the namespaces go with the process
            assert not leftovers(child.pid)
        else:  # untrappable: left behind, and removed by the next user of the harness
            left = ours(child.pid)
            assert len(left) == 2
            assert set(left) <= set(netsim.cleanup_stale())
            assert not leftovers(child.pid)
