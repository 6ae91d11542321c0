"""One rank of `hpml bench scaling --measure`, started under mpirun on the 2-node network.

    python -m hpml.bench.scaling_worker SPEC.json      (hpml.bench.scaling_measure writes the spec and reads OUT)

Every rank runs the same phases in step (barriers), and each node shapes its own egress
(`netsim.shape_here`) before each link rate:

Rate None is the unshaped link: there the host's own work sets the pace, which the model takes
as the host time of those bytes (hpml.bench.comm_model).

1. per rate, before Horovod starts (MPI transport only): a 128 MiB MPI allreduce against a
   one-way send of the same bytes (the duplex factor); then, under Horovod, the time of a
   4-byte allreduce (fixed cost);
2. the gradient list of the configured (full-size) flatten model: allreduce per codec and rate.
   fp16 sends float16 tensors, which is what crosses the wire under Compression.fp16 (the casts
   around it, local work, are left out: 2.2 GB of float32 twice over would not fit two ranks here);
3. per head at the measure size: local compute without Horovod (forward, whole step, optimizer
   apply), then per codec and rate: Horovod training steps and a standalone allreduce of the
   model's gradient list (float16 tensors for fp16, as in 2).

Rank 0 writes the numbers to spec["out"] as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import numpy as np


def _times(fn, repeats: int, barrier) -> list[float]:
    times = []
    for _ in range(repeats):
        barrier()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def duplex_factor(nbytes: int = 128 * 2**20) -> float:
    """How much longer than a one-way send of the same bytes an MPI allreduce takes (2 ranks).

    The operation is the one Horovod runs on each response (MPI_Allreduce in place), at the
    largest size it fuses tensors to (the 128 MiB fusion buffer); for 2 ranks a ring sends each
    rank's whole buffer once, so 1 means both directions at once and 2 one direction at a time.
    Median of 3: below ~100 MiB Open MPI's TCP transport switched between the two at random.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    buf, recv = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
    grads = np.ones(nbytes // 4, np.float32)

    def one_way():
        (comm.Send(buf, peer) if rank == 0 else comm.Recv(recv, peer))
        comm.Barrier()

    def allreduce():
        comm.Allreduce(MPI.IN_PLACE, grads)
        comm.Barrier()

    allreduce()
    t_one = min(_times(one_way, 2, comm.Barrier))
    t_all = float(np.median(_times(allreduce, 3, comm.Barrier)))
    return t_all / t_one


def calibrate(cfg, batch: int, barrier) -> dict:
    """Local compute of one step with a plain Keras optimizer, both ranks busy at once."""
    import tensorflow as tf

    from hpml.models.build import build_model
    from hpml.train.compile import keras_optimizer

    size = cfg.data.image_size
    model = build_model(cfg.model, size)
    opt = keras_optimizer(cfg, 1e-4)
    model.compile(opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.zeros((batch, size, size, 1), np.uint8), np.zeros(batch, np.int64)
    forward = tf.function(lambda: model(x, training=True))
    zeros = [tf.zeros_like(v) for v in model.trainable_variables]
    apply = tf.function(lambda: opt.apply_gradients(zip(zeros, model.trainable_variables, strict=True)))
    for fn in (lambda: model.train_on_batch(x, y), forward, apply):
        fn()  # trace
    out = {
        "step_s": float(np.median(_times(lambda: model.train_on_batch(x, y), 2, barrier))),
        "fwd_s": float(np.median(_times(forward, 2, barrier))),
        "apply_s": float(np.median(_times(apply, 2, barrier))),
    }
    out["bwd_s"] = max(0.0, out["step_s"] - out["fwd_s"] - out["apply_s"])
    return out


def _shape(rate: float | None, barrier, leader: bool) -> None:
    """Every rank waits while one rank per node (`leader`) reshapes that node's egress."""
    from hpml.bench.netsim import shape_here

    barrier()
    if leader:
        shape_here(rate)
    barrier()


def _duplex_before_horovod(spec: dict) -> dict[str, float]:
    """The duplex factor per rate, measured before Horovod starts: Horovod's background thread
    polls MPI all the time, and a probe on the main thread beside it measured 2.0 where
    Horovod's own allreduces, alone on that thread, ran both directions at once."""
    import os

    from mpi4py import MPI

    if spec["transport"] != "mpi":
        return {str(rate): 1.0 for rate in spec["rates"]}
    leader = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0") == "0"  # Horovod's local rank is not up yet
    out = {}
    for rate in spec["rates"]:
        _shape(rate, MPI.COMM_WORLD.Barrier, leader)
        out[str(rate)] = duplex_factor()
    return out


def run(spec: dict) -> dict:
    import tensorflow as tf

    from hpml.core.config import Config, build_dataclass
    from hpml.parallel import distributed
    from hpml.train.compile import compile_model

    duplex = _duplex_before_horovod(spec)
    world = distributed.init(pin_gpu=False)
    barrier = distributed.barrier

    def shape(rate):
        _shape(rate, barrier, world.local_rank == 0)

    base = build_dataclass(Config, spec["config"], "bench spec")
    base = replace(base, data=replace(base.data, image_size=spec["size"]))
    batch, rates = spec["batch"], spec["rates"]
    res: dict = {"duplex": {"None": 1.0, **duplex}, "call_s": {}, "heads": {}, "real": {}}
    # None: the unshaped link, where the host's own work sets the pace (the model's host time)
    for rate in [None, *rates]:
        shape(rate)
        res["call_s"][str(rate)] = float(np.median([distributed.time_allreduce_list([[1]]) for _ in range(5)]))
        _log(
            world,
            f"link @{rate} Gbit/s: duplex factor {res['duplex'][str(rate)]:.2f}, "
            f"4-byte allreduce {res['call_s'][str(rate)] * 1e3:.0f} ms",
        )
    for codec in spec["codecs"] if spec["real_shapes"] else []:
        dtype = "float16" if codec == "fp16" else "float32"
        for rate in [None, *rates]:
            shape(rate)
            seconds = distributed.time_allreduce_list(spec["real_shapes"], dtype)
            res["real"].setdefault(codec, {})[str(rate)] = seconds
            _log(world, f"real flatten gradients {codec} @{rate} Gbit/s: allreduce {seconds:.2f} s")
    for head in spec["heads"]:
        cfg = replace(base, model=replace(base.model, head=head))
        entry = res["heads"][head] = {"calib": calibrate(cfg, batch, barrier), "runs": {}}
        tf.keras.backend.clear_session()
        _log(world, f"{head} compute: " + ", ".join(f"{k} {v:.2f}" for k, v in entry["calib"].items()))
        for codec in spec["codecs"]:
            c = replace(cfg, train=replace(cfg.train, compression=codec, batch_size=batch))
            model = compile_model(c, 1e-4, world)
            distributed.broadcast_weights(model)
            x, y = np.zeros((batch, spec["size"], spec["size"], 1), np.uint8), np.zeros(batch, np.int64)
            model.train_on_batch(x, y)  # trace, and Horovod's first negotiation of every tensor
            shapes = [list(map(int, v.shape)) for v in model.trainable_variables]
            dtype = "float16" if codec == "fp16" else "float32"
            shape(None)
            entry["runs"].setdefault(codec, {})["None"] = {
                "allreduce_s": distributed.time_allreduce_list(shapes, dtype)
            }
            for rate in rates:
                shape(rate)
                steps = _times(lambda m=model, x=x, y=y: m.train_on_batch(x, y), spec["steps"], barrier)
                reduce_s = distributed.time_allreduce_list(shapes, dtype)
                entry["runs"].setdefault(codec, {})[str(rate)] = {"steps_s": steps, "allreduce_s": reduce_s}
                _log(world, f"{head} {codec} @{rate} Gbit/s: steps {_fmt(steps)} s, allreduce {reduce_s:.2f} s")
            del model
            tf.keras.backend.clear_session()
    shape(None)
    return res


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


def _log(world, text: str) -> None:
    if world.is_root:
        print(f"[bench] {text}", flush=True)


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    res = run(spec)
    from hpml.parallel import distributed

    if distributed.world().is_root:
        with open(spec["out"], "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
