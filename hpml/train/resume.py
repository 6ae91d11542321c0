"""Where a training run starts: rank 0 decides, every rank gets the same state.

Rank 0 alone reads the checkpoints (newest readable one; an incompatible one is refused, not
skipped), then its weights, optimizer state and TrainState are broadcast, so a read error on
one rank can never send ranks to different checkpoints or step counts. A checkpoint written by
another rank count or batch size is resumed explicitly: the position in the epoch is carried
over as images seen, and the learning rate is rescaled by the LR scaling rule, both logged.
`--restart` keeps the old checkpoints and history aside and starts over. A new run (no
checkpoint) with `model.init_from` starts from that weights file; a resumed one ignores it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import tensorflow as tf

from hpml.core.config import Config
from hpml.core.runfiles import RunDir
from hpml.core.world import World
from hpml.models.weights_import import WeightsImportError, import_weights
from hpml.parallel import distributed
from hpml.train import checkpoints
from hpml.train.checkpoints import TrainState

log = logging.getLogger(__name__)


def resume(model: tf.keras.Model, run_dir: Path, cfg: Config, world: World, steps: int, lr: float) -> TrainState:
    """The state to train from, identical on every rank; `model` holds rank 0's weights."""
    ckpt_dir = RunDir(run_dir).checkpoints
    model.optimizer.build(model.trainable_variables)  # every rank: slots exist to receive
    fp = checkpoints.fingerprint(cfg, model)
    decision: object = None
    if world.is_root:
        try:
            decision = checkpoints.restore(model, ckpt_dir, fp)
            if decision is None and cfg.model.init_from:  # a new run: its weights from the file
                report = import_weights(Path(cfg.model.init_from), model)
                log.info("model.init_from: %s", report.lines()[0])
        except (checkpoints.IncompatibleCheckpoint, WeightsImportError) as exc:
            decision = exc
    decision = distributed.broadcast_object(decision, "resume")
    if isinstance(decision, Exception):
        raise decision  # the same on every rank: reported once, by rank 0
    distributed.broadcast_weights(model)
    fresh = TrainState(lr=lr, world_size=world.size, batch_size=cfg.train.batch_size, steps_per_epoch=steps)
    if decision is None:
        model.optimizer.learning_rate.assign(lr)
        return fresh
    state, prefix = decision
    state = _rescale(state, cfg, world, steps)
    model.optimizer.learning_rate.assign(state.lr)
    if world.is_root:
        log.info("resumed from %s: epoch %d, step %d", prefix.name, state.epoch, state.step_in_epoch)
    return state


def _rescale(state: TrainState, cfg: Config, world: World, steps: int) -> TrainState:
    """Carry a checkpoint over to this rank count, batch size and epoch length."""
    t = cfg.train
    old = (state.world_size, state.batch_size)
    new = (world.size, t.batch_size)
    if old != new and state.batch_size:

        def scale(batch: int, size: int) -> float:
            return distributed.scaled_lr(1.0, batch, t.base_batch, size, t.lr_scaling)

        lr_ratio = scale(t.batch_size, world.size) / scale(state.batch_size, state.world_size)
        seen = state.step_in_epoch * state.batch_size * state.world_size
        step = min(seen // (t.batch_size * world.size), steps)
        if world.is_root:
            log.warning(
                f"checkpoint written by {old[0]} rank(s) x batch {old[1]}, resumed on {new[0]} x {new[1]}: epoch "
                f"{state.epoch} continues after {seen} images (step {state.step_in_epoch} of {state.steps_per_epoch}"
                f" -> step {step} of {steps}); lr {state.lr:.4g} -> {state.lr * lr_ratio:.4g} "
                f"(lr_scaling {t.lr_scaling})"
            )
        state = replace(state, step_in_epoch=step, lr=state.lr * lr_ratio)
    elif state.step_in_epoch > steps:
        if world.is_root:
            log.warning(
                "the epoch is now %d steps (was %d): epoch %d's training is complete",
                steps,
                state.steps_per_epoch,
                state.epoch,
            )
        state = replace(state, step_in_epoch=steps)
    return replace(state, world_size=world.size, batch_size=t.batch_size, steps_per_epoch=steps)


def set_aside(run_dir: Path) -> None:
    """--restart: keep the previous attempt's checkpoints and history under a dated name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = RunDir(run_dir)
    for path in (run.checkpoints, run.history):
        if path.exists():
            kept = run_dir / f"{path.stem}.before-{stamp}{path.suffix}"
            path.rename(kept)
            log.warning("--restart: %s kept as %s", path, kept)
