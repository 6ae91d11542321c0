"""The only module that imports Horovod: init, world, LR scaling, collectives, callbacks.

Everything else asks this module, so a laptop without a working Horovod still trains
(single process, with a warning) and the rank always comes from Horovod, never the env.
"""

from __future__ import annotations

import contextlib
import logging
import math

import numpy as np

from hpml.core import failure
from hpml.core.world import World

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


def gpus_in_use() -> int:
    """GPUs this rank computes on (after `init` pinned one per local rank)."""
    import tensorflow as tf

    return len(tf.config.list_logical_devices("GPU"))


def world() -> World:
    if _hvd is None:
        return World()
    return World(_hvd.rank(), _hvd.size(), _hvd.local_rank())


def global_batch(batch: int, size: int, accumulate_steps: int = 1) -> int:
    """Images behind one optimizer update: per-rank batch x ranks x accumulated micro-batches."""
    return batch * size * accumulate_steps


def scaled_lr(lr: float, batch: int, base_batch: int, size: int, rule: str, accumulate_steps: int = 1) -> float:
    """LR for the global batch (`global_batch`), given `lr` was tuned for `base_batch`."""
    ratio = global_batch(batch, size, accumulate_steps) / base_batch
    return {"linear": lr * ratio, "sqrt": lr * math.sqrt(ratio), "none": lr}[rule]


def distributed_optimizer(optimizer, compression: str = "none", accumulate_steps: int = 1):
    """Horovod's DistributedOptimizer: gradients averaged over ranks, optionally cast to fp16 on
    the wire, optionally summed over `accumulate_steps` micro-batches before one allreduce.

    With accumulation Horovod divides the summed gradients by `accumulate_steps`
    (average_aggregated_gradients), so N micro-batches of B give the update of one N*B batch.
    """
    if _hvd is None:
        if accumulate_steps > 1:
            raise RuntimeError("train.accumulate_steps > 1 needs Horovod, which is not available here")
        if compression != "none":
            log.warning("train.compression=%s ignored: a single process allreduces nothing", compression)
        return optimizer
    codec = {"none": _hvd.Compression.none, "fp16": _hvd.Compression.fp16}[compression]
    return _hvd.DistributedOptimizer(
        optimizer, compression=codec, backward_passes_per_step=accumulate_steps, average_aggregated_gradients=True
    )


def whole_step_xla(jit_compile: bool) -> bool:
    """Whether Keras may compile the whole train step with XLA (`compile(jit_compile=...)`).

    HorovodAllreduce has no XLA kernel (CPU builds; GPU builds only with HOROVOD_ENABLE_XLA_OPS=1),
    and a step that contains one fails to compile. Under Horovod the model's ops are therefore
    auto-clustered by XLA and the allreduce stays a TensorFlow op, as Horovod's XLA guide says.
    On CPU hosts TensorFlow clusters only with TF_XLA_FLAGS=--tf_xla_cpu_global_jit in the
    environment before it starts; GPUs cluster without it.
    """
    import os

    import tensorflow as tf

    if not jit_compile:
        return False
    if _hvd is None or os.environ.get("HOROVOD_ENABLE_XLA_OPS") == "1":
        return True
    tf.config.optimizer.set_jit("autoclustering")
    log.info("train.jit_compile: XLA auto-clustering (the Horovod allreduce stays outside XLA)")
    return False


def keras_callbacks() -> list:
    """Average metrics over ranks (first among the callbacks). The initial state is not
    broadcast here: hpml.train.resume broadcasts rank 0's weights and optimizer explicitly."""
    if _hvd is None:
        return []
    return [_hvd.callbacks.MetricAverageCallback()]


def allreduce_sum(values: np.ndarray, name: str) -> np.ndarray:
    if _hvd is None:
        return np.asarray(values)
    import horovod.tensorflow as hvd_tf

    return hvd_tf.allreduce(np.asarray(values), op=hvd_tf.Sum, name=name).numpy()


def allreduce_max(values, name: str) -> np.ndarray:
    """Element-wise maximum over ranks (integers)."""
    values = np.asarray(values, np.int64)
    if _hvd is None:
        return values
    import horovod.tensorflow as hvd_tf

    return hvd_tf.allreduce(values, op=hvd_tf.Max, name=name).numpy()


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


@contextlib.contextmanager
def gloo_rendezvous(slots: str):
    """Horovod's Gloo rendezvous server for `slots` ("host:n,host:n"), as `horovodrun --gloo` runs
    it; yields its port (ranks find it through HOROVOD_GLOO_RENDEZVOUS_ADDR/PORT)."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousServer

    hosts = parse_hosts(slots)
    server = RendezvousServer()
    port = server.start()
    try:
        server.init(get_host_assignments(hosts, sum(h.slots for h in hosts)))
        yield port
    finally:
        server.stop()


def time_allreduce_list(shapes: list[list[int]], dtype: str = "float32", compression: str = "none") -> float:
    """Seconds to allreduce (average) tensors of `shapes` the way DistributedOptimizer does: one
    Horovod allreduce per tensor, all issued together from one graph, so Horovod fuses them as in
    a training step. Traced before the clock starts; every rank starts together (a benchmark)."""
    import gc
    import time

    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    codec = {"none": hvd_tf.Compression.none, "fp16": hvd_tf.Compression.fp16}[compression]
    tensors = [tf.ones(shape, dtype) for shape in shapes]

    @tf.function
    def reduce_all(ts):  # the tensors are arguments, not captures: they go when this returns
        return [hvd_tf.allreduce(t, op=hvd_tf.Average, compression=codec, name=f"list_{i}") for i, t in enumerate(ts)]

    reduce_all.get_concrete_function(tensors)
    barrier()
    start = time.perf_counter()
    out = reduce_all(tensors)  # returns when every allreduce is done
    seconds = time.perf_counter() - start
    del out, tensors, reduce_all
    gc.collect()  # 2 x 2.2 GB per rank for the flatten model: free it before the next call
    return seconds
