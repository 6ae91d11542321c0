"""hpml.bench.comm_model: fusion, cycles, overlap with backprop, ring cost, against hand-worked cases."""

import pytest

from hpml.bench.comm_model import Horovod, Link, _fuse, allreduce_seconds, ready_times, ring, simulate, step_seconds

MiB = 2**20


def test_fusion_follows_horovods_look_ahead():
    # 100 + 20 fit a 128 MiB buffer; the next 20 does not (140) and is looked past, the 5 after
    # it still joins; at the 3000 the skipped bytes exceed the threshold and the look-ahead stops.
    # The skipped 20 opens the next buffer, the 3000 goes alone, the 1 (never reached) comes last.
    sizes = [100 * MiB, 20 * MiB, 20 * MiB, 5 * MiB, 3000 * MiB, 1 * MiB]
    assert _fuse(sizes, 128 * MiB) == [[100 * MiB, 20 * MiB, 5 * MiB], [20 * MiB], [3000 * MiB], [1 * MiB]]
    # once the skipped bytes exceed the threshold Horovod stops looking ahead
    assert _fuse([100 * MiB, 200 * MiB, 1 * MiB], 128 * MiB) == [[100 * MiB], [200 * MiB], [1 * MiB]]
    assert _fuse([1, 2, 3], 0) == [[1], [2], [3]]  # HOROVOD_FUSION_THRESHOLD=0: no fusion


def test_ring_cost_and_link_payload():
    link = Link(gbit=1.0, efficiency=0.5, duplex=2.0, latency_s=0.001)
    assert ring(link, 1)(1e9) == 0.0
    # 2 ranks: 2 (n-1)/n x B = B on the wire; x2 alternating directions; /0.5 payload share
    assert ring(link, 2)(1e6) == pytest.approx(2 * 0.001 + 2 * 1e6 * 8 / (1e9 * 0.5))
    assert ring(Link(1.0), 4)(4e6) == pytest.approx(2 * 3 / 4 * 4e6 * 8 / 1e9)


def test_responses_wait_for_cycles_and_each_other():
    per_mb = lambda b: b / 1e6  # noqa: E731  (1 MB/s)
    hvd = Horovod(fusion_bytes=10**9, cycle_s=0.001)
    out = simulate([(0.0105, 1_000_000), (0.5, 1_000)], per_mb, hvd)
    assert out[0]["start"] == pytest.approx(0.011) and out[0]["end"] == pytest.approx(1.011)
    # the second gradient was ready long before, but the one thread was busy until 1.011; having
    # overrun its cycle it starts the next one at once
    assert out[1]["start"] == pytest.approx(1.011) and out[1]["end"] == pytest.approx(1.012)
    # host work half-overlaps the wire; the fixed call cost delays everything
    hvd = Horovod(fusion_bytes=10**9, cycle_s=0.001, call_s=0.5, host_s_per_byte=0.5e-6)
    (fused,) = simulate([(0.0, 500_000), (0.0, 500_000)], per_mb, hvd)
    assert fused["tensors"] == 2 and fused["start"] == pytest.approx(0.501)
    assert fused["end"] == pytest.approx(0.501 + max(1.0, 0.5) + min(1.0, 0.5) / 2)


def test_overlap_hides_early_gradients_behind_the_backward_pass():
    # forward order: a big conv (3 units of work, 1 kB of weights) then a dense head (1 unit, 1 MB)
    layers = [(3.0, 1_000), (1.0, 1_000_000)]
    assert ready_times(layers, 1.0, 4.0) == [(2.0, 1_000_000), (5.0, 1_000)]
    per_mb = lambda b: b / 1e6  # noqa: E731
    hvd = Horovod(cycle_s=0.001)
    hidden = step_seconds(layers, 1.0, 4.0, 0.5, per_mb, hvd)
    # the head's MB goes from 2.0 to 3.0, behind the backward pass; the conv's kB at 5.0 (a cycle
    # boundary) and takes 1 ms: only that is exposed
    assert hidden["step"] == pytest.approx(5.0 + 0.001 + 0.5)
    exposed = step_seconds(layers, 1.0, 4.0, 0.5, lambda b: b / 1e5, hvd)  # 10 s for the head's MB
    assert exposed["step"] == pytest.approx(2.0 + 10.0 + 0.01 + 0.5)
    assert exposed["exposed"] == pytest.approx(exposed["step"] - 5.5)
    # all at once (a standalone allreduce): no backward to hide behind
    assert allreduce_seconds([1_000_000, 1_000], per_mb, Horovod(cycle_s=0.001)) == pytest.approx(0.001 + 1.001)
