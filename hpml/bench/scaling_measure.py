"""`hpml bench scaling --measure`: the scaling model against real steps on a shaped 2-node network.

Builds the 2-node network (hpml.bench.netsim, one rank per node), runs hpml.bench.scaling_worker there, and
prints, per link rate, the predicted (hpml.bench.comm_model) against the measured time of

* the allreduce of the configured flatten model's real gradient list (full image size: the
  bytes the claim is about), fp32 and fp16;
* training steps of the configured backbone at a small image size (CPU-sized compute), both
  heads, fp32 and fp16, and the standalone allreduce of those models' gradients.

The model's inputs are the link (tc rate, TCP payload share from the MTU, and the transport's
duplex factor measured in the same run), Horovod's fusion threshold and cycle time, the host's
memcpy rate, and the compute of one step measured on this CPU in the same run with both ranks
busy. Nothing is fitted to the times it predicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from hpml.bench.comm_model import FUSION_BYTES, Horovod, Link, allreduce_seconds, ring, step_seconds, tcp_efficiency
from hpml.bench.netsim import Network
from hpml.core.config import Config
from hpml.parallel.mpi import mpirun_env


def _horovod_params(call_s: float, host_s_per_byte: float) -> Horovod:
    fusion = int(os.environ.get("HOROVOD_FUSION_THRESHOLD", FUSION_BYTES))
    cycle = float(os.environ.get("HOROVOD_CYCLE_TIME", 1.0)) / 1e3
    return Horovod(fusion_bytes=fusion, cycle_s=cycle, call_s=call_s, host_s_per_byte=host_s_per_byte)


def _host_per_byte(unshaped_s: float, call_s: float, nbytes: float) -> float:
    """The host's own seconds per byte: the unshaped link's allreduce time (the wire is not what
    limits it there) without the fixed cost of any allreduce."""
    return max(0.0, unshaped_s - call_s) / nbytes


def _mem_available() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return float("inf")


def run_worker(spec: dict, transport: str) -> tuple[dict, dict]:
    """Start the worker on both nodes; returns (its results, bytes each node sent on the link)."""
    with tempfile.TemporaryDirectory(prefix="hpml-bench-") as tmp, Network() as net:
        spec = dict(spec, out=str(Path(tmp) / "result.json"))
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        before = net.counters()
        cmd = net.mpirun(
            [sys.executable, "-m", "hpml.bench.scaling_worker", str(Path(tmp) / "spec.json")],
            transport=transport,
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        proc = subprocess.Popen(cmd, env=mpirun_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = []
        for line in proc.stdout:
            if line.startswith("[bench]"):
                print("  " + line[8:].rstrip(), flush=True)
            tail = (tail + [line])[-40:]
        if proc.wait() != 0 or not Path(spec["out"]).is_file():
            raise RuntimeError(f"the measurement job failed (exit {proc.returncode}):\n{''.join(tail)}")
        after = net.counters()
        sent = {h: after[h]["tx_bytes"] - before[h]["tx_bytes"] for h in after}
        return json.loads(Path(spec["out"]).read_text()), sent


def measure(
    cfg: Config,
    real_shapes: list[list[int]],
    profiles: dict,
    size: int,
    batch: int,
    rates: list[float],
    transport: str = "mpi",
    steps: int = 2,
    codecs=("none", "fp16"),
) -> dict:
    """Run the measurement and print predicted vs measured. `profiles[head]` = layer_profile at `size`."""
    need = 2 * 2.2 * 4 * sum(int(np.prod(s)) for s in real_shapes)  # 2 ranks: inputs + outputs (+ slack)
    if need > _mem_available():
        raise RuntimeError(
            f"the full-size gradient allreduce needs ~{need / 1e9:.1f} GB of memory; "
            f"{_mem_available() / 1e9:.1f} GB available"
        )
    spec = {
        "config": cfg.to_dict(),
        "size": size,
        "batch": batch,
        "rates": rates,
        "steps": steps,
        "heads": list(profiles),
        "codecs": list(codecs),
        "real_shapes": real_shapes,
        "transport": transport,
    }
    print(
        f"\n2-node network (hpml.bench.netsim): 1 rank per node, link shaped by tc tbf, transport {transport}; "
        f"steps at {size} px, batch {batch}; rates {', '.join(f'{r:g}' for r in rates)} Gbit/s"
    )
    res, sent = run_worker(spec, transport)
    res["link_bytes_sent"] = sent
    report(res, real_shapes, profiles, rates, codecs)
    return res


def _err(pred: float, meas: float) -> str:
    return f"{(pred - meas) / meas:+.0%}"


def report(res: dict, real_shapes, profiles: dict, rates: list[float], codecs) -> dict:
    eff = tcp_efficiency()
    links = {r: Link(r, eff, res["duplex"][str(r)]) for r in rates}
    call = res["call_s"]
    print(
        "measured: "
        + "; ".join(
            f"at {r:g} Gbit/s duplex factor x{res['duplex'][str(r)]:.2f}, 4-byte allreduce "
            f"{call[str(r)] * 1e3:.0f} ms"
            for r in rates
        )
        + f"; unshaped 4-byte allreduce {call['None'] * 1e3:.0f} ms.\nassumed: link payload share {eff:.3f} "
        f"(TCP/IPv4, MTU 1500); Horovod fusion {_horovod_params(0, 0).fusion_bytes / 2**20:.0f} MiB, cycle "
        f"{_horovod_params(0, 0).cycle_s * 1e3:g} ms"
    )
    summary: dict = {"real": {}, "steps": {}}
    elements = [int(np.prod(s)) for s in real_shapes]
    if res["real"]:
        print(f"\n{'allreduce of the full-size flatten gradients':<46} {'predicted':>10} {'measured':>10} {'error':>7}")
    for codec in res["real"]:
        width = 2 if codec == "fp16" else 4
        grads = [n * width for n in elements]
        unshaped = res["real"][codec]["None"]
        host = _host_per_byte(unshaped, call["None"], sum(grads))
        print(f"{sum(grads) / 1e6:.0f} MB {'fp16' if width == 2 else 'fp32'} unshaped (host time): {unshaped:.2f} s")
        for r in rates:
            pred = allreduce_seconds(grads, ring(links[r], 2), _horovod_params(call[str(r)], host))
            meas = res["real"][codec][str(r)]
            summary["real"].setdefault(codec, {})[r] = (pred, meas)
            label = f"{sum(grads) / 1e6:.0f} MB {'fp16' if width == 2 else 'fp32'} @ {r:g} Gbit/s"
            print(f"{label:<46} {pred:>9.2f}s {meas:>9.2f}s {_err(pred, meas):>7}")
    print(
        f"\n{'training step':<30} {'grads':>8} {'step pred':>10} {'(exposed)':>9} {'measured':>9} {'error':>6}"
        f" {'allreduce pred':>15} {'measured':>9} {'error':>6}"
    )
    for head, entry in res["heads"].items():
        c = entry["calib"]
        print(
            f"{head}: compute on this CPU, both ranks busy: forward {c['fwd_s']:.2f} s + backward {c['bwd_s']:.2f}"
            f" s + apply {c['apply_s']:.2f} s = step {c['step_s']:.2f} s"
        )
        for codec in entry["runs"]:
            width = 2 if codec == "fp16" else 4
            layers = [(f, n * width) for f, n in profiles[head]]
            grads = [b for _, b in layers if b]
            unshaped = entry["runs"][codec]["None"]["allreduce_s"]
            host = _host_per_byte(unshaped, call["None"], sum(grads))
            for r in rates:
                run, hvd, transfer = (
                    entry["runs"][codec][str(r)],
                    _horovod_params(call[str(r)], host),
                    ring(links[r], 2),
                )
                pred = step_seconds(layers, c["fwd_s"], c["bwd_s"], c["apply_s"], transfer, hvd)
                ar_pred = allreduce_seconds(grads, transfer, hvd)
                meas = float(np.median(run["steps_s"]))
                summary["steps"].setdefault(head, {}).setdefault(codec, {})[r] = (pred["step"], meas)
                label = f"{codec} @ {r:g} Gbit/s"
                print(
                    f"  {label:<28} {sum(grads) / 1e6:>6.0f}MB {pred['step']:>9.2f}s"
                    f" {pred['exposed']:>8.2f}s {meas:>8.2f}s {_err(pred['step'], meas):>6}"
                    f" {ar_pred:>14.2f}s {run['allreduce_s']:>8.2f}s"
                    f" {_err(ar_pred, run['allreduce_s']):>6}"
                )
    _conclude(summary, rates, res)
    return summary


def _conclude(summary: dict, rates: list[float], res: dict) -> None:
    lo, hi = min(rates), max(rates)
    real = summary["real"]
    print()
    if "none" in real:
        errs = ", ".join(f"{_err(*real['none'][r])} at {r:g} Gbit/s" for r in rates)
        print(f"flatten gradients (full size, fp32): model vs measured allreduce {errs}")
    if "none" in real and "fp16" in real:
        meas = real["none"][lo][1] / real["fp16"][lo][1]
        pred = real["none"][lo][0] / real["fp16"][lo][0]
        print(f"fp16 compression at {lo:g} Gbit/s: allreduce {meas:.2f}x faster measured ({pred:.2f}x predicted)")
    steps = summary["steps"]
    if "flatten" in steps and {"none", "fp16"} <= set(steps["flatten"]):
        f = steps["flatten"]
        print(
            f"flatten step at {lo:g} Gbit/s: fp32 / fp16 = {f['none'][lo][1] / f['fp16'][lo][1]:.2f}x measured "
            f"({f['none'][lo][0] / f['fp16'][lo][0]:.2f}x predicted)"
        )
    for codec, runs in steps.get("gap", {}).items():
        print(
            f"gap step ({codec}): {runs[lo][1]:.2f} s at {lo:g} Gbit/s vs {runs[hi][1]:.2f} s at {hi:g} Gbit/s "
            f"({runs[lo][1] / runs[hi][1]:.2f}x; predicted {runs[lo][0] / runs[hi][0]:.2f}x)"
        )
    sent = res["link_bytes_sent"]
    print(
        "bytes each node sent over the link: "
        + ", ".join(f"{h} {b / 1e9:.2f} GB" for h, b in sent.items())
        + " (the nodes have no other interface)"
    )
