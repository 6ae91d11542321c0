"""train.compression and train.accumulate_steps against Horovod's contract, on 2 real MPI ranks.

Horovod's DistributedOptimizer (horovod/_keras/__init__.py, docs/api): with
`compression=Compression.fp16` each gradient is cast to float16, allreduced (averaged) in float16
and cast back; with `backward_passes_per_step=N, average_aggregated_gradients=True` the gradients
of N micro-batches are summed locally, allreduced once, divided by N, and applied once.

The expected weights are computed here without Horovod, in this process, from the initial
weights the workers saved: Keras gradients per rank's batch and a plain Keras SGD step.
"""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from conftest import MPI_ENV, WORKERS
from levers_worker import SIZE, data

from hpml.core.config import ModelConfig
from hpml.models.build import build_model

LR = 0.05  # steps large enough that fp16 rounding of the gradients moves the weights measurably


def run_workers(tmp_path, compression, accumulate, updates, batch):
    cmd = [
        "mpirun",
        "-np",
        "2",
        sys.executable,
        str(WORKERS / "levers_worker.py"),
        str(tmp_path),
        compression,
        str(accumulate),
        str(updates),
        str(batch),
        str(LR),
    ]
    proc = subprocess.run(cmd, env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    load = lambda name: [a for _, a in sorted(np.load(tmp_path / name).items(), key=lambda kv: int(kv[0][4:]))]  # noqa: E731
    return load("initial.npz"), load("rank0.npz"), load("rank1.npz")


def reference_model(initial):
    model = build_model(ModelConfig(backbone="tiny_cnn", head="gap"), SIZE)
    model.set_weights(initial)
    return model


def sgd():  # hpml's `train.optimizer: sgd`, written out here
    return tf.keras.optimizers.SGD(LR, momentum=0.9, nesterov=True)


def gradients(model, x, y):
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


def test_fp16_compression_keeps_ranks_identical_and_rounds_gradients_to_fp16(tmp_path):
    updates, batch = 3, 4
    initial, rank0, rank1 = run_workers(tmp_path, "fp16", 1, updates, batch)
    assert max_diff(rank0, rank1) == 0.0  # bit-identical on both ranks

    x, y = data(2, updates, batch)
    expected = {}
    for codec in ("fp16", "fp32"):
        model, opt = reference_model(initial), sgd()
        for k in range(updates):
            g0, g1 = gradients(model, x[0, k], y[0, k]), gradients(model, x[1, k], y[1, k])
            if codec == "fp16":  # cast, sum in half precision, halve (exact), cast back
                avg = [
                    ((a.astype(np.float16) + b.astype(np.float16)) * np.float16(0.5)).astype(np.float32)
                    for a, b in zip(g0, g1, strict=True)
                ]
            else:
                avg = [(a + b) / 2 for a, b in zip(g0, g1, strict=True)]
            opt.apply_gradients(zip(avg, model.trainable_variables, strict=True))
        expected[codec] = model.get_weights()

    def share_differing(a, b):
        return sum(int(np.sum(u != v)) for u, v in zip(a, b, strict=True)) / sum(u.size for u in a)

    fp16_effect = max_diff(expected["fp16"], expected["fp32"])
    assert max_diff(rank0, initial) > 1e-2 and fp16_effect > 1e-5
    # The gradients computed here and in the workers agree to float32 noise (another process,
    # another op order); now and then that noise moves a gradient across a float16 rounding
    # boundary: one half-precision ulp x LR on a few weights (seen: 81 of 79,267 after 3 steps,
    # at most 8e-6). Every other weight is bit-identical to the fp16 reference.
    assert share_differing(rank0, expected["fp16"]) < 0.01
    assert max_diff(rank0, expected["fp16"]) <= 0.1 * fp16_effect
    # ... while nearly every weight differs from the float32-averaging reference.
    assert share_differing(rank0, expected["fp32"]) > 0.5
    assert max_diff(rank0, expected["fp32"]) > 0.5 * fp16_effect


def test_accumulated_micro_batches_equal_one_large_batch_step(tmp_path):
    accumulate, updates, batch = 3, 2, 4
    initial, rank0, rank1 = run_workers(tmp_path, "none", accumulate, updates, batch)
    assert max_diff(rank0, rank1) == 0.0

    x, y = data(2, accumulate * updates, batch)
    model = reference_model(initial)
    model.compile(sgd(), "sparse_categorical_crossentropy")
    for k in range(updates):  # one step on all 2 ranks x `accumulate` micro-batches at once
        micro = slice(k * accumulate, (k + 1) * accumulate)
        model.train_on_batch(x[:, micro].reshape(-1, SIZE, SIZE, 1), y[:, micro].reshape(-1))
    expected = model.get_weights()
    # Same float32 arithmetic up to summation order (mean of means vs one mean): relative
    # differences of ~1e-6 in the gradients; the updates themselves are > 1e-2.
    assert max_diff(rank0, initial) > 1e-2
    for got, want in zip(rank0, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
