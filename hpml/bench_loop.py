"""`hpml bench loop`: steps/s of `hpml train`'s loop against a bare Horovod Keras `fit`.

Run under mpirun/srun. The same compiled model, the same epoch-plan data and the same ranks;
the bare loop is Horovod's minimal recipe (one broadcast of the weights, then `fit` with
MetricAverageCallback), the hpml loop adds every callback training runs (hpml.callbacks: the
LR warm-up, the scheduled preemption check, progress, RUN/status.json). The two alternate
(A B B A ...) after one untimed fit of each, so drift on a noisy machine hits both alike; the
ratio is the sum of steps over the sum of seconds, hpml over bare.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from hpml import distributed
from hpml.callbacks import StepProgress, Warmup, training_callbacks
from hpml.checkpoints import TrainState
from hpml.config import Config
from hpml.data import train_dataset, train_shard_labels
from hpml.epoch_plan import TrainPlan
from hpml.preemption import Preemption
from hpml.records import load_manifest
from hpml.status import StatusWriter
from hpml.train import compile_model

TARGET = 0.98


def bench(cfg: Config, shard_dir: Path, steps: int, rounds: int, out: Path | None = None) -> dict:
    world = distributed.init()
    t = cfg.train
    plan = TrainPlan(train_shard_labels(shard_dir, load_manifest(shard_dir)), t, world)
    steps = min(steps, plan.steps) // t.accumulate_steps * t.accumulate_steps
    lr = distributed.scaled_lr(t.lr, t.batch_size, t.base_batch, world.size, t.lr_scaling, t.accumulate_steps)
    model = compile_model(cfg, lr, world)
    distributed.broadcast_weights(model)
    with tempfile.TemporaryDirectory() as tmp:
        progress = StepProgress(world)
        status = StatusWriter(Path(tmp), world, TrainState(), 1, steps, t.batch_size * world.size)
        preemption = Preemption(t.accumulate_steps, t.stop_check_steps)
        ours = training_callbacks(preemption, Warmup(t.lr, lr, steps, 0), progress, [status.callback()])
        loops = {"bare": distributed.keras_callbacks(), "hpml": ours}

        def timed(name: str, epoch: int) -> float:
            data = train_dataset(plan, cfg, epoch, 0)
            progress.start(f"bench {name}", steps)
            distributed.barrier()
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, callbacks=loops[name], verbose=0)
            distributed.barrier()
            return time.perf_counter() - start

        for name in ("bare", "hpml"):  # untimed: tracing, and the preemption check calibrates its interval
            timed(name, 0)
        order = [("bare", "hpml"), ("hpml", "bare")]
        seconds = {"bare": 0.0, "hpml": 0.0}
        for r in range(rounds):
            for name in order[r % 2]:
                seconds[name] += timed(name, r + 1)
    rate = {name: rounds * steps / s for name, s in seconds.items()}
    result = {"ranks": world.size, "steps_per_fit": steps, "rounds": rounds, "steps_per_s": rate,
              "ratio": rate["hpml"] / rate["bare"], "target": TARGET,
              "check_every": preemption.schedule.every}  # fmt: skip
    if world.is_root:
        print(f"{world.size} ranks x batch {t.batch_size}, {cfg.model.backbone}/{cfg.model.head} at "
              f"{cfg.data.image_size} px: {rounds} rounds of {steps} steps each")  # fmt: skip
        print(f"bare Horovod fit (MetricAverageCallback)  {rate['bare']:8.2f} steps/s")
        print(f"hpml train loop (all its callbacks)       {rate['hpml']:8.2f} steps/s")
        print(f"preemption check every {result['check_every']} steps")
        print(f"ratio hpml/bare = {result['ratio']:.3f}   (target >= {TARGET})")
        if out:
            out.write_text(json.dumps(result, indent=1) + "\n")
    return result
