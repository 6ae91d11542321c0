"""`hpml bench scaling`: what data-parallel scaling to expect before spending GPU hours.

For the configured backbone at the configured image size, with both heads: parameters,
gradient bytes allreduced per step (fp32, and fp16 with Horovod's compression), forward
FLOPs per image (counted layer by layer), and a model of step time on N GPUs:

  compute = 3 x forward FLOPs x per-GPU batch / device throughput      (forward + backward)
  comm    = 2 (g-1)/g x bytes / intra-node bandwidth                    (ring inside a node)
          + 2 (n-1)/n x bytes / inter-node bandwidth                    (ring across n nodes)
  efficiency = compute / (compute + comm)   (no overlap: the pessimistic bound)

Device throughput and bandwidths are assumptions (A100, NVLink, 200 Gb/s), all overridable.
What can be measured here is measured and printed beside them: the allreduce bandwidth of
two local Horovod ranks, and this CPU's training step time for the model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from hpml.config import Config
from hpml.models import build_model, parameter_counts
from hpml.world import mpirun_env


@dataclass
class Assumptions:
    device_tflops: float = 30.0  # achieved, not peak: ~A100 on ResNet-50 training (2,500 img/s x 12.3 GFLOP)
    intra_gbps: float = 200.0  # GB/s NCCL bus bandwidth over NVLink inside a node
    inter_gbit: float = 200.0  # Gb/s network per node (HDR InfiniBand)
    gpus_per_node: int = 4
    batch_per_gpu: int = 8


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def forward_flops(model: tf.keras.Model) -> int:
    """Multiply-adds x 2 of convolutions and dense layers (the rest is noise)."""
    flops = 0
    for layer in _layers(model):
        out = layer.output_shape if not isinstance(layer.output_shape, list) else layer.output_shape[0]
        if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            flops += 2 * kh * kw * int(np.prod(out[1:]))
        elif isinstance(layer, tf.keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input_shape[-1] // layer.groups
            flops += 2 * kh * kw * cin * int(np.prod(out[1:]))
        elif isinstance(layer, tf.keras.layers.Dense):
            flops += 2 * layer.input_shape[-1] * layer.units
    return flops


def model_step(n_gpus: int, flops: int, grad_bytes: float, a: Assumptions) -> tuple[float, float]:
    """(compute seconds, communication seconds) per step on `n_gpus`."""
    compute = 3 * flops * a.batch_per_gpu / (a.device_tflops * 1e12)
    if n_gpus == 1:
        return compute, 0.0
    g = min(n_gpus, a.gpus_per_node)
    nodes = max(1, n_gpus // a.gpus_per_node)
    comm = 2 * (g - 1) / g * grad_bytes / (a.intra_gbps * 1e9)
    if nodes > 1:
        comm += 2 * (nodes - 1) / nodes * grad_bytes / (a.inter_gbit / 8 * 1e9)
    return compute, comm


def measure_allreduce(nbytes: int) -> float | None:
    """GB/s of a Horovod allreduce of `nbytes` between 2 local ranks (bus bandwidth), or None."""
    cmd = ["mpirun", "-np", "2", sys.executable, "-c",
           "import sys; from hpml import distributed as d; w = d.init(); "
           f"t = d.time_allreduce({nbytes}); w.is_root and sys.stdout.write(f'SECONDS {{t}}\\n')"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=mpirun_env(), timeout=600)
    times = [float(t) for t in re.findall(r"SECONDS ([0-9.e+-]+)", proc.stdout)]
    if proc.returncode != 0 or not times:
        print(f"(allreduce measurement failed: {proc.stderr.strip()[-300:]})")
        return None
    return 2 * (2 - 1) / 2 * nbytes / max(times) / 1e9  # ring bus bandwidth, as NCCL reports it


def measure_cpu_step(cfg: Config, batch: int = 2, steps: int = 2) -> float:
    model = build_model(cfg.model, cfg.data.image_size)
    model.compile(tf.keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    x = tf.zeros([batch, cfg.data.image_size, cfg.data.image_size, 1], tf.uint8)
    y = tf.zeros([batch], tf.int64)
    model.train_on_batch(x, y)  # build + trace
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def bench(cfg: Config, a: Assumptions, gpus: list[int], measure: bool) -> dict:
    results = {}
    size = cfg.data.image_size
    print(f"backbone {cfg.model.backbone} at {size} px; per-GPU batch {a.batch_per_gpu}; assumed: "
          f"{a.device_tflops:g} TFLOPS achieved per GPU, {a.intra_gbps:g} GB/s inside a node "
          f"({a.gpus_per_node} GPUs), {a.inter_gbit:g} Gb/s between nodes")  # fmt: skip
    for head in ("flatten", "gap"):
        c = replace(cfg, model=replace(cfg.model, head=head))
        tf.keras.backend.clear_session()
        model = build_model(c.model, size)
        counts = parameter_counts(model)
        trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        flops = forward_flops(model)
        del model
        row = {"parameters": counts, "trainable": trainable, "forward_gflops": flops / 1e9,
               "grad_mb_fp32": trainable * 4 / 1e6, "grad_mb_fp16": trainable * 2 / 1e6}  # fmt: skip
        print(f"\n[{head} head] parameters {counts['total']:,} (backbone {counts['backbone']:,}, head "
              f"{counts['head']:,}); forward {flops / 1e9:.3g} GFLOP/image; gradients per step "
              f"{row['grad_mb_fp32']:.0f} MB fp32, {row['grad_mb_fp16']:.0f} MB fp16")  # fmt: skip
        print(
            f"{'GPUs':>5} {'compute ms':>11} {'comm fp32 ms':>13} {'eff fp32':>9} {'comm fp16 ms':>13} {'eff fp16':>9}"
        )
        table = []
        for n in gpus:
            comp, c32 = model_step(n, flops, trainable * 4, a)
            _, c16 = model_step(n, flops, trainable * 2, a)
            e32, e16 = comp / (comp + c32), comp / (comp + c16)
            table.append({"gpus": n, "compute_ms": comp * 1e3, "comm_fp32_ms": c32 * 1e3, "eff_fp32": e32,
                          "comm_fp16_ms": c16 * 1e3, "eff_fp16": e16})  # fmt: skip
            print(f"{n:>5} {comp * 1e3:>11.1f} {c32 * 1e3:>13.1f} {e32:>9.0%} {c16 * 1e3:>13.1f} {e16:>9.0%}")
        row["table"] = table
        if measure:
            nbytes = min(trainable * 4, 256 * 2**20)
            bw = measure_allreduce(nbytes)
            if bw:
                row["measured_allreduce_gbps"] = bw
                print(f"measured here: Horovod allreduce of {nbytes / 1e6:.0f} MB over 2 local CPU ranks: "
                      f"{bw:.2f} GB/s bus bandwidth -> {trainable * 4 / (bw * 1e9):.2f} s for this model's fp32 "
                      "gradients")  # fmt: skip
            step = measure_cpu_step(c)
            row["measured_cpu_step_s"] = step
            print(f"measured here: one training step, batch 2, on this CPU: {step:.2f} s "
                  f"({2 / step:.1f} img/s)")  # fmt: skip
        results[head] = row
    f, g = results["flatten"], results["gap"]
    last_f, last_g = f["table"][-1], g["table"][-1]
    print(f"\nflatten head: {f['grad_mb_fp32'] / g['grad_mb_fp32']:.0f}x the gradient bytes of gap for "
          f"{f['forward_gflops'] / g['forward_gflops']:.2f}x the compute; at {last_f['gpus']} GPUs the model "
          f"predicts {last_f['eff_fp32']:.0%} (flatten) vs {last_g['eff_fp32']:.0%} (gap) efficiency.")  # fmt: skip
    return results


def dump(results: dict, path) -> None:
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
