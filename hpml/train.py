"""`hpml train`: Horovod data-parallel Keras training from the shards.

One Keras `fit` call per epoch (or the rest of one, after a preemption), then an exact
validation pass sharded over ranks and summed, then the epoch-end decisions that must be the
same on every rank (ReduceLROnPlateau on the validation loss, never test). Rank 0 alone writes
the run directory: checkpoints, best weights, history.csv, TensorBoard, config, versions.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml import checkpoints, distributed
from hpml.checkpoints import TrainState
from hpml.config import CLASSES, Config, save_config
from hpml.data import eval_dataset, split_count, stage, train_dataset
from hpml.logs import Progress
from hpml.models import build_model, parameter_counts
from hpml.preemption import MARKER, REQUEUE_EXIT_CODE, Preemption
from hpml.rundir import write_versions
from hpml.world import World

log = logging.getLogger(__name__)
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


class Warmup(tf.keras.callbacks.Callback):
    """Linear LR ramp from the single-worker LR to the scaled LR over the first steps."""

    def __init__(self, start_lr: float, target_lr: float, steps: int, first_step: int) -> None:
        super().__init__()
        self.start, self.target, self.steps, self.step = start_lr, target_lr, steps, first_step

    def on_train_batch_begin(self, batch, logs=None) -> None:
        if self.step < self.steps:
            frac = (self.step + 1) / self.steps
            self.model.optimizer.learning_rate.assign(self.start + (self.target - self.start) * frac)
        self.step += 1


class StepProgress(tf.keras.callbacks.Callback):
    """Steps within an epoch on rank 0: a bar on a terminal, a line every 30 s in a SLURM log."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world, self.view, self.label, self.total = world, None, "", 0

    def start(self, label: str, total: int) -> None:
        self.label, self.total = label, total

    def on_train_begin(self, logs=None) -> None:
        self.view = Progress(self.total, self.label, self.world, unit="step")

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.view.update()

    def on_train_end(self, logs=None) -> None:
        self.view.close()


def _optimizer(cfg: Config, lr: float):
    if cfg.train.optimizer == "adam":
        return tf.keras.optimizers.Adam(lr, amsgrad=cfg.train.amsgrad)
    return tf.keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def compile_model(cfg: Config, lr: float) -> tf.keras.Model:
    if cfg.train.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    tf.keras.utils.set_random_seed(cfg.train.seed)  # same initial weights everywhere (then broadcast)
    model = build_model(cfg.model, cfg.data.image_size)
    t = cfg.train
    optimizer = distributed.distributed_optimizer(_optimizer(cfg, lr), t.compression, t.accumulate_steps)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=distributed.whole_step_xla(t.jit_compile))  # fmt: skip
    return model


def validate(model: tf.keras.Model, shard_dir: Path, cfg: Config, world: World) -> tuple[float, float]:
    """Exact loss and accuracy over the whole val split: each rank its files, sums allreduced."""
    totals = np.zeros(3)  # loss sum, correct, count
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    for x, y in eval_dataset(shard_dir, "val", cfg, cfg.eval.batch_size, world):
        p = model(x, training=False)
        totals += [
            float(loss_fn(y, p)),
            float(tf.reduce_sum(tf.cast(tf.argmax(p, 1) == y, tf.float32))),
            len(y),
        ]
    loss_sum, correct, count = distributed.allreduce_sum(totals, "validate")
    return loss_sum / max(count, 1), correct / max(count, 1)


def weights_digest(model: tf.keras.Model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def _append_history(path: Path, row: dict, resumed_epoch: int | None = None) -> None:
    rows = []
    if path.is_file():
        with path.open() as fh:
            rows = [r for r in csv.DictReader(fh) if resumed_epoch is None or int(r["epoch"]) < resumed_epoch]
    rows.append(row)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _plateau_step(state: TrainState, model, val_loss: float, lr: float, t, world: World) -> bool:
    """ReduceLROnPlateau on the validation loss; the same decision on every rank (same numbers)."""
    improved = val_loss < state.best_val_loss
    state.best_val_loss = min(val_loss, state.best_val_loss)
    state.plateau_wait = 0 if improved else state.plateau_wait + 1
    if state.plateau_wait >= t.plateau_patience > 0:
        model.optimizer.learning_rate.assign(lr * t.plateau_factor)
        state.plateau_wait = 0
        if world.is_root:
            log.info("val_loss has not improved for %d epochs: lr -> %.3g", t.plateau_patience, lr * t.plateau_factor)
    return improved


def _record_epoch(run_dir: Path, writer, row: dict, state: TrainState, resumed_epoch, epochs: int) -> None:
    """Rank 0: the epoch's line in the log, history.csv and TensorBoard."""
    log.info("epoch %d/%d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.3g (%.1fs)", state.epoch, epochs,
             row["loss"], row["accuracy"], row["val_loss"], row["val_accuracy"], row["lr"], row["seconds"])  # fmt: skip
    _append_history(run_dir / "history.csv", row, resumed_epoch)
    with writer.as_default(step=state.epoch):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            tf.summary.scalar(key, row[key])


def train(cfg: Config, shard_dir: Path, run_dir: Path) -> int:
    world = distributed.init()
    # The run records where its data really came from: evaluation reads the same shards.
    cfg = replace(cfg, data=replace(cfg.data, shards=str(Path(shard_dir).resolve())))
    t = cfg.train
    ckpt_dir = run_dir / "checkpoints"
    if world.is_root:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MARKER).unlink(missing_ok=True)  # this run is the resumption
        save_config(cfg, run_dir / "config.yaml")
        write_versions(run_dir / "versions.json")
    if cfg.data.stage_dir:
        shard_dir = stage(shard_dir, Path(cfg.data.stage_dir), world, ("train", "val"))
        distributed.barrier()
    n_train = split_count(shard_dir, "train")
    steps = t.steps_per_epoch or max(1, math.ceil(n_train / (t.batch_size * world.size)))
    lr = distributed.scaled_lr(t.lr, t.batch_size, t.base_batch, world.size, t.lr_scaling, t.accumulate_steps)
    model = compile_model(cfg, lr)
    if world.is_root:
        counts = parameter_counts(model)
        log.info("model %s: %s parameters (backbone %s, head %s); %d ranks x batch %d, %d steps/epoch, lr %.3g",
                 model.name, f"{counts['total']:,}", f"{counts['backbone']:,}", f"{counts['head']:,}",
                 world.size, t.batch_size, steps, lr)  # fmt: skip
    state = checkpoints.restore(model, ckpt_dir) or TrainState()
    distributed.broadcast_weights(model)
    resumed_epoch = state.epoch if state.global_step else None
    preemption = Preemption().install()
    warmup = Warmup(t.lr, lr, int(t.warmup_epochs * steps), state.global_step)
    progress = StepProgress(world)
    callbacks = [*distributed.keras_callbacks(), warmup, preemption, progress]
    class_weight = {i: t.class_weights[c] for i, c in enumerate(CLASSES)}
    if len(set(class_weight.values())) == 1:
        class_weight = None
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if world.is_root else None
    while state.epoch < t.epochs:
        start = time.monotonic()
        remaining = steps - state.step_in_epoch
        data = train_dataset(shard_dir, cfg, world, state.epoch, state.step_in_epoch, steps)
        progress.start(f"epoch {state.epoch + 1}/{t.epochs}", remaining)
        fit = model.fit(data, epochs=state.epoch + 1, initial_epoch=state.epoch, steps_per_epoch=remaining,
                        class_weight=class_weight, callbacks=callbacks, verbose=0)  # fmt: skip
        state.global_step += preemption.steps_done
        if preemption.requested:
            state.step_in_epoch += preemption.steps_done
            if world.is_root:
                checkpoints.save(model, ckpt_dir, state)
                (run_dir / MARKER).write_text(f"epoch {state.epoch} step {state.step_in_epoch}\n")
                log.warning("preempted at epoch %d step %d: checkpoint saved; exit %d = requeue me",
                            state.epoch, state.step_in_epoch, REQUEUE_EXIT_CODE)  # fmt: skip
            distributed.barrier()
            return REQUEUE_EXIT_CODE
        distributed.average_non_trainable(model)
        val_loss, val_acc = validate(model, shard_dir, cfg, world)
        current_lr = float(model.optimizer.learning_rate.numpy())
        row = {"epoch": state.epoch, "loss": fit.history["loss"][-1], "accuracy": fit.history["accuracy"][-1],
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": current_lr,
               "seconds": round(time.monotonic() - start, 2)}  # fmt: skip
        improved = _plateau_step(state, model, val_loss, current_lr, t, world)
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        if world.is_root:
            _record_epoch(run_dir, writer, row, state, resumed_epoch, t.epochs)
            resumed_epoch = None
            if improved:
                checkpoints.save_weights_atomic(model, ckpt_dir / "best.h5")
            checkpoints.save(model, ckpt_dir, state)
        distributed.barrier()  # nobody races ahead of a checkpoint being written
    log.info("training done; weights sha256 %s", weights_digest(model))
    return 0
