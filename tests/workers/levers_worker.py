"""One rank of a tiny Horovod training run through hpml's own compile path (run under mpirun).

Usage: levers_worker.py OUT COMPRESSION ACCUMULATE UPDATES BATCH LR

Every rank draws the same data from a fixed seed and trains on its own slice: rank r gets the
micro-batches data[r], each of BATCH images. Rank 0 saves the initial weights and every rank
its final weights to OUT, so the test can compute the expected result without Horovod.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SIZE = 16  # image side: the tiny CNN pools 16 -> 2


def data(ranks: int, micro: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """[rank, micro-batch, image, ...] uint8 images and labels, the same on every rank."""
    rng = np.random.default_rng(1234)
    x = rng.integers(0, 256, (ranks, micro, batch, SIZE, SIZE, 1), dtype=np.uint8)
    y = rng.integers(0, 3, (ranks, micro, batch))
    return x, y


def overrides(compression: str, accumulate: int, batch: int) -> list[str]:
    return [
        "model.backbone=tiny_cnn",
        "model.head=gap",
        f"data.image_size={SIZE}",
        "train.optimizer=sgd",
        f"train.compression={compression}",
        f"train.accumulate_steps={accumulate}",
        f"train.batch_size={batch}",
    ]


def main() -> None:
    out, compression, accumulate, updates, batch, lr = sys.argv[1:]
    accumulate, updates, batch, lr = int(accumulate), int(updates), int(batch), float(lr)
    from hpml.core.config import load_config
    from hpml.parallel import distributed
    from hpml.train.compile import compile_model

    world = distributed.init()
    cfg = load_config(None, overrides(compression, accumulate, batch))
    model = compile_model(cfg, lr, world)
    distributed.broadcast_weights(model)  # compile_model seeds each rank differently (dropout)
    if world.is_root:
        np.savez(Path(out) / "initial.npz", *model.get_weights())
    x, y = data(world.size, accumulate * updates, batch)
    xr = x[world.rank].reshape(-1, SIZE, SIZE, 1)
    yr = y[world.rank].reshape(-1)
    model.fit(xr, yr, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=distributed.keras_callbacks())
    np.savez(Path(out) / f"rank{world.rank}.npz", *model.get_weights())


if __name__ == "__main__":
    main()
