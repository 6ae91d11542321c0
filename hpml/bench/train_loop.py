"""`hpml bench loop`: steps/s of `hpml train`'s loop against a bare Horovod Keras `fit`.

Run under mpirun/srun. The same compiled model, the same epoch-plan data and the same ranks;
the bare loop is Horovod's minimal recipe (one broadcast of the weights, then `fit` with
MetricAverageCallback), the hpml loop adds every callback training runs (hpml.train.callbacks: the
LR warm-up, the scheduled preemption check, progress, RUN/status.json). The two alternate
(A B B A ...) after one untimed fit of each, so drift on a noisy machine hits both alike; each
round (one fit of each) gives one ratio, hpml over bare steps/s, and rounds repeat until its
95 % interval judges the target (hpml.bench.rounds).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hpml.bench.rounds import Budget, until_decided
from hpml.core.config import Config
from hpml.parallel import distributed
from hpml.shards.shardset import ShardSet
from hpml.train.callbacks import StepProgress, Warmup, training_callbacks
from hpml.train.checkpoints import TrainState
from hpml.train.compile import compile_model
from hpml.train.data import train_dataset, train_shard_labels
from hpml.train.epoch_plan import TrainPlan
from hpml.train.preemption import Preemption
from hpml.train.status_writer import StatusWriter

TARGET = 0.98


def bench(cfg: Config, shards: ShardSet, steps: int, budget: Budget = Budget(), out: Path | None = None) -> dict:
    world = distributed.init()
    t = cfg.train
    steps = max(1, steps // t.accumulate_steps) * t.accumulate_steps  # whole optimizer updates
    # Every timed fit is `steps` long, however small the split: the epoch wraps around its data.
    plan = TrainPlan(train_shard_labels(shards), replace(t, steps_per_epoch=steps), world)
    lr = distributed.scaled_lr(t.lr, t.batch_size, t.base_batch, world.size, t.lr_scaling, t.accumulate_steps)
    model = compile_model(cfg, lr, world)
    distributed.broadcast_weights(model)
    say = print if world.is_root else (lambda _: None)
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
        seconds: dict[str, list[float]] = {"bare": [], "hpml": []}

        def one_round(r: int) -> dict[str, float]:
            for name in (("bare", "hpml"), ("hpml", "bare"))[r % 2]:  # A B, B A: drift hits both alike
                seconds[name].append(timed(name, r + 1))
            mine = np.array([seconds["bare"][-1], seconds["hpml"][-1]])
            bare_s, hpml_s = distributed.allreduce_sum(mine, "bench_round") / world.size  # the same on every rank
            return {"hpml/bare": bare_s / hpml_s}  # steps/s of hpml over steps/s of bare

        def agree(stop: bool) -> bool:  # every rank takes rank 0's decision: the loops stay in step
            return bool(distributed.broadcast_object(stop, "bench_stop"))

        estimate = until_decided(one_round, {"hpml/bare": TARGET}, budget, agree, say)["hpml/bare"]
    rate = {name: len(s) * steps / sum(s) for name, s in seconds.items()}
    result = {
        "ranks": world.size,
        "steps_per_fit": steps,
        "rounds": estimate.rounds,
        "steps_per_s": rate,
        "ratio": estimate.ratio,
        "interval": [estimate.low, estimate.high],
        "verdict": estimate.verdict,
        "target": TARGET,
        "check_every": preemption.schedule.every,
    }
    say(
        f"{world.size} ranks x batch {t.batch_size}, {cfg.model.backbone}/{cfg.model.head} at "
        f"{cfg.data.image_size} px: {estimate.rounds} rounds of {steps} steps per loop"
    )
    say(f"bare Horovod fit (MetricAverageCallback)  {rate['bare']:8.2f} steps/s")
    say(f"hpml train loop (all its callbacks)       {rate['hpml']:8.2f} steps/s")
    say(f"preemption check every {result['check_every']} steps")
    say("ratio " + estimate.line("hpml/bare"))
    if out and world.is_root:
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result
