"""`hpml bench scaling`: what data-parallel scaling to expect before spending GPU hours.

For the configured backbone at the configured image size, with both heads: parameters,
gradient bytes allreduced per step (fp32, and fp16 with Horovod's compression), forward
FLOPs per image (counted layer by layer), and a model of step time on N GPUs:

  compute = 3 x forward FLOPs x per-GPU batch / device throughput      (forward + backward)
  comm    = 2 (g-1)/g x bytes / intra-node bandwidth                    (ring inside a node)
          + 2 (n-1)/n x bytes / inter-node bandwidth                    (ring across n nodes)
  efficiency = compute / (compute + comm)   (no overlap: the pessimistic bound)

and the same with Horovod's overlap of the allreduce with the backward pass and its tensor
fusion (hpml.bench.comm_model: gradients ready layer by layer, fused per 1 ms cycle into 128 MiB
buffers, sent one response after another; the optimizer's apply time is left out here).

Device throughput and bandwidths are assumptions (A100, NVLink, 200 Gb/s), all overridable.
`--measure` checks the model where it can be checked: real training steps and allreduces on a
shaped 2-node network on this machine (hpml.bench.scaling_measure).
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from hpml.bench.comm_model import step_seconds
from hpml.bench.scaling_measure import measure as run_measure
from hpml.core.config import Config
from hpml.models.build import build_model, parameter_counts


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


def layer_flops(layer) -> int:
    """Forward multiply-adds x 2 of one convolution or dense layer (the rest is noise)."""
    out = layer.output_shape if not isinstance(layer.output_shape, list) else layer.output_shape[0]
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * kh * kw * int(np.prod(out[1:]))
    if isinstance(layer, tf.keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = layer.input_shape[-1] // layer.groups
        return 2 * kh * kw * cin * int(np.prod(out[1:]))
    if isinstance(layer, tf.keras.layers.Dense):
        return 2 * layer.input_shape[-1] * layer.units
    return 0


def forward_flops(model: tf.keras.Model) -> int:
    return sum(layer_flops(layer) for layer in _layers(model))


def layer_profile(model: tf.keras.Model) -> list[tuple[float, int]]:
    """[(forward FLOPs per image, gradient elements)] per layer in forward order: when each
    gradient becomes ready during backprop, and how big it is (hpml.bench.comm_model)."""
    return [
        (float(layer_flops(layer)), sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
        for layer in _layers(model)
    ]


def gradient_shapes(model: tf.keras.Model) -> list[list[int]]:
    return [list(map(int, v.shape)) for v in model.trainable_variables]


def comm_seconds(n_gpus: int, nbytes: float, a: Assumptions) -> float:
    """Seconds of a ring allreduce of `nbytes` on `n_gpus`: inside a node, then across nodes."""
    if n_gpus == 1:
        return 0.0
    g = min(n_gpus, a.gpus_per_node)
    nodes = max(1, n_gpus // a.gpus_per_node)
    comm = 2 * (g - 1) / g * nbytes / (a.intra_gbps * 1e9)
    if nodes > 1:
        comm += 2 * (nodes - 1) / nodes * nbytes / (a.inter_gbit / 8 * 1e9)
    return comm


def model_step(n_gpus: int, flops: int, grad_bytes: float, a: Assumptions) -> tuple[float, float]:
    """(compute seconds, communication seconds) per step on `n_gpus`, nothing overlapped."""
    return 3 * flops * a.batch_per_gpu / (a.device_tflops * 1e12), comm_seconds(n_gpus, grad_bytes, a)


def overlapped_step(n_gpus: int, layers: list[tuple[float, int]], width: int, a: Assumptions) -> float:
    """Step seconds with Horovod's overlap of allreduce and backprop, and tensor fusion
    (hpml.bench.comm_model): forward a third of the compute, backward two thirds."""
    compute = 3 * sum(f for f, _ in layers) * a.batch_per_gpu / (a.device_tflops * 1e12)
    if n_gpus == 1:
        return compute  # Horovod skips the allreduce on one rank
    grads = [(f, n * width) for f, n in layers]
    return step_seconds(grads, compute / 3, 2 * compute / 3, 0.0, lambda b: comm_seconds(n_gpus, b, a))["step"]


def bench(cfg: Config, a: Assumptions, gpus: list[int], measure: dict | None = None) -> dict:
    """The GPU projection table; with `measure` (keyword arguments of hpml.bench.scaling_measure.measure
    except the model-derived ones) also the run on the shaped 2-node network."""
    results: dict = {}
    size = cfg.data.image_size
    print(
        f"backbone {cfg.model.backbone} at {size} px; per-GPU batch {a.batch_per_gpu}; assumed: "
        f"{a.device_tflops:g} TFLOPS achieved per GPU, {a.intra_gbps:g} GB/s inside a node "
        f"({a.gpus_per_node} GPUs), {a.inter_gbit:g} Gb/s between nodes; efficiency without overlap / with "
        "Horovod's overlap and fusion"
    )
    real_shapes: list[list[int]] = []
    for head in ("flatten", "gap"):
        c = replace(cfg, model=replace(cfg.model, head=head))
        tf.keras.backend.clear_session()
        model = build_model(c.model, size)
        counts = parameter_counts(model)
        trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        flops = forward_flops(model)
        layers = layer_profile(model)
        if head == "flatten":
            real_shapes = gradient_shapes(model)
        del model
        gc.collect()  # the 512 px flatten model holds 2.2 GB; the measurement needs that memory
        row = {
            "parameters": counts,
            "trainable": trainable,
            "forward_gflops": flops / 1e9,
            "grad_mb_fp32": trainable * 4 / 1e6,
            "grad_mb_fp16": trainable * 2 / 1e6,
        }
        print(
            f"\n[{head} head] parameters {counts['total']:,} (backbone {counts['backbone']:,}, head "
            f"{counts['head']:,}); forward {flops / 1e9:.3g} GFLOP/image; gradients per step "
            f"{row['grad_mb_fp32']:.0f} MB fp32, {row['grad_mb_fp16']:.0f} MB fp16"
        )
        print(
            f"{'GPUs':>5} {'compute ms':>11} {'comm fp32 ms':>13} {'eff fp32':>12} {'comm fp16 ms':>13} "
            f"{'eff fp16':>12}"
        )
        table = []
        for n in gpus:
            comp, c32 = model_step(n, flops, trainable * 4, a)
            _, c16 = model_step(n, flops, trainable * 2, a)
            e32, e16 = comp / (comp + c32), comp / (comp + c16)
            o32, o16 = (comp / overlapped_step(n, layers, w, a) for w in (4, 2))
            table.append(
                {
                    "gpus": n,
                    "compute_ms": comp * 1e3,
                    "comm_fp32_ms": c32 * 1e3,
                    "eff_fp32": e32,
                    "comm_fp16_ms": c16 * 1e3,
                    "eff_fp16": e16,
                    "eff_fp32_overlap": o32,
                    "eff_fp16_overlap": o16,
                }
            )
            print(
                f"{n:>5} {comp * 1e3:>11.1f} {c32 * 1e3:>13.1f} {e32:>6.0%} {o32:>5.0%} {c16 * 1e3:>13.1f} "
                f"{e16:>6.0%} {o16:>5.0%}"
            )
        row["table"] = table
        results[head] = row
    f, g = results["flatten"], results["gap"]
    last_f, last_g = f["table"][-1], g["table"][-1]
    print(
        f"\nflatten head: {f['grad_mb_fp32'] / g['grad_mb_fp32']:.0f}x the gradient bytes of gap for "
        f"{f['forward_gflops'] / g['forward_gflops']:.2f}x the compute; at {last_f['gpus']} GPUs the model "
        f"predicts {last_f['eff_fp32']:.0%} / {last_f['eff_fp32_overlap']:.0%} (flatten) vs "
        f"{last_g['eff_fp32']:.0%} / {last_g['eff_fp32_overlap']:.0%} (gap) efficiency."
    )
    if measure is not None:
        small = measure["size"]
        profiles = {}
        for head in ("flatten", "gap"):
            tf.keras.backend.clear_session()
            profiles[head] = layer_profile(build_model(replace(cfg.model, head=head), small))
        tf.keras.backend.clear_session()
        results["measured"] = run_measure(cfg, real_shapes, profiles, **measure)
    return results


def dump(results: dict, path) -> None:
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
