"""The only module that imports Horovod: init, world, LR scaling, collectives, callbacks.

Everything else asks this module, so a laptop without a working Horovod still trains
(single process, with a warning) and the rank always comes from Horovod, never the env.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from hpml import failure
from hpml.world import World

log = logging.getLogger(__name__)
_hvd = None  # horovod.tensorflow.keras once initialised


def init(pin_gpu: bool = True) -> World:
    """Initialise Horovod (MPI or Gloo, whatever launched us) and pin one GPU per local rank."""
    global _hvd
    import tensorflow as tf

    try:
        import horovod.tensorflow.keras as hvd
    except ImportError as exc:  # documented fallback: still useful on a laptop
        log.warning("Horovod unavailable (%s): running as a single process", exc)
        return World()
    hvd.init()
    _hvd = hvd
    if pin_gpu:
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        if gpus:  # --gpus-per-node gives every rank all of the node's GPUs: take ours
            tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    world = World(hvd.rank(), hvd.size(), hvd.local_rank())
    failure.bind(world)
    return world


def world() -> World:
    if _hvd is None:
        return World()
    return World(_hvd.rank(), _hvd.size(), _hvd.local_rank())


def scaled_lr(lr: float, batch: int, base_batch: int, size: int, rule: str) -> float:
    """LR for the global batch `batch * size`, given `lr` was tuned for `base_batch`."""
    ratio = batch * size / base_batch
    return {"linear": lr * ratio, "sqrt": lr * math.sqrt(ratio), "none": lr}[rule]


def distributed_optimizer(optimizer):
    return optimizer if _hvd is None else _hvd.DistributedOptimizer(optimizer)


def keras_callbacks() -> list:
    """Average metrics over ranks (first among the callbacks). The initial state is not
    broadcast here: hpml.resume broadcasts rank 0's weights and optimizer explicitly."""
    if _hvd is None:
        return []
    return [_hvd.callbacks.MetricAverageCallback()]


def allreduce_sum(values: np.ndarray, name: str) -> np.ndarray:
    if _hvd is None:
        return np.asarray(values)
    import horovod.tensorflow as hvd_tf

    return hvd_tf.allreduce(np.asarray(values), op=hvd_tf.Sum, name=name).numpy()


def any_rank(flag: bool, name: str = "any_rank") -> bool:
    """True on every rank when it is true on at least one (e.g. a preemption signal)."""
    return bool(allreduce_sum(np.array([int(flag)], np.int32), name)[0] > 0)


def gather_objects(obj, name: str = "gather") -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    if _hvd is None:
        return [obj]
    import horovod.tensorflow as hvd_tf

    return hvd_tf.allgather_object(obj, name=name)


def broadcast_object(obj, name: str = "broadcast"):
    """Rank 0's `obj` on every rank (pickled)."""
    if _hvd is None:
        return obj
    import horovod.tensorflow as hvd_tf

    return hvd_tf.broadcast_object(obj, root_rank=0, name=name)


def broadcast_weights(model) -> None:
    """After a restore: make every rank hold rank 0's exact weights and optimizer state."""
    if _hvd is None:
        return
    import horovod.tensorflow as hvd_tf

    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    if model.optimizer is not None and model.optimizer.variables:
        hvd_tf.broadcast_variables(model.optimizer.variables, root_rank=0)


def average_non_trainable(model) -> None:
    """Average BatchNorm moving statistics over ranks: gradients are averaged by Horovod,
    but these are updated from each rank's own batches and would drift apart."""
    if _hvd is None or _hvd.size() == 1:
        return
    import horovod.tensorflow as hvd_tf

    for i, var in enumerate(model.non_trainable_variables):
        var.assign(hvd_tf.allreduce(var, op=hvd_tf.Average, name=f"non_trainable_{i}"))


def time_allreduce(nbytes: int, repeats: int = 3) -> float:
    """Best-of-`repeats` seconds for a Sum allreduce of `nbytes` of float32 (a benchmark)."""
    import time

    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    x = tf.ones([max(1, nbytes // 4)], tf.float32)
    hvd_tf.allreduce(x, op=hvd_tf.Sum, name="bench_warmup").numpy()
    best = float("inf")
    for i in range(repeats):
        barrier()
        start = time.perf_counter()
        hvd_tf.allreduce(x, op=hvd_tf.Sum, name=f"bench_{i}").numpy()
        best = min(best, time.perf_counter() - start)
    return best


def barrier() -> None:
    if _hvd is not None:
        allreduce_sum(np.zeros(1, np.int32), "barrier")
