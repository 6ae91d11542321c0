"""How long Horovod's gradient allreduce takes, and how much of it a training step waits for.

A small discrete-event model of what Horovod 0.28 does with the gradients of one step:

* Backpropagation produces gradients layer by layer from the output back to the input; a
  layer's gradient is ready when the backward pass has done the work of every layer after it
  (backward work taken as proportional to forward FLOPs).
* Horovod's background thread wakes every cycle (HOROVOD_CYCLE_TIME, 1 ms) and takes the
  gradients that are ready, packing them in order into fusion buffers of at most
  HOROVOD_FUSION_THRESHOLD bytes (128 MiB), looking past ones that do not fit as Horovod's
  FuseResponses does; a larger tensor travels alone. Responses run one after another on that
  one thread. Getting any allreduce done at all has a fixed cost (op dispatch, negotiation
  round trip), measured as the time of a 4-byte one.
* Wire time w of a response of B bytes (ring allreduce over n ranks): 2(n-1)/n x B per rank at
  the payload rate of the link (line rate x TCP/IP payload share), x the transport's duplex
  factor (1 when it sends and receives at once), plus 2(n-1) link latencies.
* Host time h of the same bytes: the host's own work (copies into and out of the fusion
  buffer, the reduction, the TCP stack), h = B x host seconds per byte, measured as the same
  allreduce on an unshaped link (0 for the GPU projections). Wire and host work overlap only
  in part: a response takes max(w, h) + min(w, h) / 2. The rule was read off an exploratory
  run (a 512 MiB list, 0.25-2 Gbit/s, MPI and Gloo) lying between the two bounds, perfect
  overlap max(w, h) and none w + h; it was not fitted to the benchmark's own numbers.
* The step ends when both the backward pass and the last allreduce are done, then the
  optimizer applies the averaged gradients: step = max(fwd + bwd, comm end) + apply.

What it leaves out: the communication thread and the transport are assumed not to slow the
compute down (where they share a busy CPU, as on this 2-core machine, they do); negotiation
costs one cycle per response and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

FUSION_BYTES = 128 * 2**20  # Horovod 0.28 default (common/operations.cc)
CYCLE_S = 1e-3  # HOROVOD_CYCLE_TIME default, 1 ms


@dataclass(frozen=True)
class Link:
    gbit: float  # line rate per direction, Gbit/s
    efficiency: float = 1.0  # payload bytes per wire byte
    duplex: float = 1.0  # 1: both directions at once; 2: one direction at a time
    latency_s: float = 0.0

    def seconds(self, nbytes: float) -> float:
        return self.duplex * nbytes * 8 / (self.gbit * 1e9 * self.efficiency)


def tcp_efficiency(mtu: int = 1500) -> float:
    """TCP payload share of the bytes a Linux qdisc counts: IPv4 + TCP with timestamps
    (52 bytes) inside the MTU, plus the 14-byte Ethernet header outside it."""
    return (mtu - 52) / (mtu + 14)


@dataclass(frozen=True)
class Horovod:
    fusion_bytes: int = FUSION_BYTES
    cycle_s: float = CYCLE_S
    call_s: float = 0.0  # fixed cost of getting any allreduce done (dispatch, negotiation), measured
    host_s_per_byte: float = 0.0  # the host's own work per byte allreduced, measured


Transfer = Callable[[float], float]  # bytes allreduced -> seconds on the wire


def ring(link: Link, ranks: int) -> Transfer:
    """Ring allreduce over `ranks` ranks on `link`."""

    def seconds(nbytes: float) -> float:
        if ranks <= 1:
            return 0.0
        return 2 * (ranks - 1) * link.latency_s + link.seconds(2 * (ranks - 1) / ranks * nbytes)

    return seconds


def simulate(ready: list[tuple[float, int]], transfer: Transfer, hvd: Horovod | None = None) -> list[dict]:
    """Horovod's responses for gradients `ready` = [(seconds when ready, bytes)], in order.

    Returns one dict per response: start, end, bytes, tensors.
    """
    hvd = hvd or Horovod()
    pending = sorted(ready, key=lambda t: t[0])
    responses, i = [], 0
    last_start = free = hvd.call_s  # last cycle's start; when the thread finished its work
    while i < len(pending):
        # An idle thread wakes every cycle after the last cycle began; one that overran starts
        # the next cycle as soon as it is done (Horovod's RunLoopOnce).
        start = max(last_start + hvd.cycle_s, free)
        if pending[i][0] > start:
            start = last_start + math.ceil((pending[i][0] - last_start) / hvd.cycle_s - 1e-9) * hvd.cycle_s
        last_start = clock = start
        batch = []
        while i < len(pending) and pending[i][0] <= start + 1e-12:
            batch.append(pending[i][1])
            i += 1
        for group in _fuse(batch, hvd.fusion_bytes):
            nbytes = sum(group)
            wire, host = transfer(nbytes), nbytes * hvd.host_s_per_byte
            end = clock + max(wire, host) + min(wire, host) / 2
            responses.append({"start": clock, "end": end, "bytes": nbytes, "tensors": len(group)})
            clock = end
        free = clock
    return responses


def _fuse(sizes: list[int], threshold: int) -> list[list[int]]:
    """Horovod's FuseResponses: the first waiting tensor opens a buffer, later ones join while the
    total stays within the threshold; ones that do not fit are skipped (looked past) as long as
    the skipped bytes stay within the threshold too, and wait for the next buffer."""
    groups, waiting = [], list(sizes)
    while waiting:
        group, rest, skipped = [waiting[0]], [], 0
        for j, size in enumerate(waiting[1:], start=1):
            if sum(group) + size <= threshold:
                group.append(size)
                continue
            skipped += size
            if skipped > threshold:
                rest.extend(waiting[j:])
                break
            rest.append(size)
        groups.append(group)
        waiting = rest
    return groups


def allreduce_seconds(grad_bytes: list[int], transfer: Transfer, hvd: Horovod | None = None) -> float:
    """All gradients handed over at once (a standalone allreduce of the list)."""
    responses = simulate([(0.0, b) for b in grad_bytes], transfer, hvd)
    return responses[-1]["end"] if responses else 0.0


def ready_times(layers: list[tuple[float, int]], fwd_s: float, bwd_s: float) -> list[tuple[float, int]]:
    """[(forward FLOPs, gradient bytes)] in forward order -> [(ready seconds, bytes)].

    A layer's gradient is ready when the backward pass has covered it and every later layer.
    """
    total = sum(f for f, _ in layers) or 1.0
    out, done = [], 0.0
    for flops, nbytes in reversed(layers):
        done += flops
        if nbytes:
            out.append((fwd_s + bwd_s * done / total, nbytes))
    return out


def step_seconds(
    layers: list[tuple[float, int]],
    fwd_s: float,
    bwd_s: float,
    apply_s: float,
    transfer: Transfer,
    hvd: Horovod | None = None,
) -> dict:
    """Predicted step: compute, when communication ends, what the step waits for beyond compute."""
    responses = simulate(ready_times(layers, fwd_s, bwd_s), transfer, hvd)
    comm_end = responses[-1]["end"] if responses else 0.0
    busy = sum(r["end"] - r["start"] for r in responses)
    step = max(fwd_s + bwd_s, comm_end) + apply_s
    return {"step": step, "comm_busy": busy, "exposed": step - (fwd_s + bwd_s + apply_s), "responses": len(responses)}
