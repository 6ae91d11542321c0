"""`hpml train`: Horovod data-parallel Keras training from the shards.

Start-up, in order: the preemption handler (an early SIGUSR1 must not kill the job), the run
lock, the epoch plan from the manifest (every rank computes the same step count, and a split
that cannot feed every rank stops the job before any step), the shards' checksums, the model,
and the state to resume from (rank 0 decides: hpml.train.resume). Then per epoch: one Keras `fit`
over the rest of the epoch (none when a preemption struck on its last step), the epoch-end
decisions taken alike on every rank (hpml.train.epoch_end, hpml.train.plateau), and rank 0's checkpoint.
Rank 0 alone writes the run directory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import tensorflow as tf

from hpml.core import best_epoch
from hpml.core.config import CLASSES, Config, for_world, save_config
from hpml.core.failure import phase
from hpml.core.runfiles import RunDir
from hpml.core.world import World
from hpml.models.build import parameter_counts
from hpml.parallel import distributed
from hpml.shards.shardset import ShardSet
from hpml.train import checkpoints
from hpml.train.callbacks import StepProgress, Warmup, training_callbacks
from hpml.train.checkpoints import TrainState
from hpml.train.compile import compile_model
from hpml.train.data import train_dataset, train_shard_labels
from hpml.train.epoch_end import no_validation, record_epoch, validate, weights_digest
from hpml.train.epoch_plan import TrainDataError, TrainPlan
from hpml.train.hparams import write_hparams
from hpml.train.plateau import plateau_step
from hpml.train.preemption import REQUEUE_EXIT_CODE, Preemption, clear_marker, install_handlers, write_marker
from hpml.train.provenance import write_versions
from hpml.train.resume import resume, set_aside
from hpml.train.run_lock import acquire_lock, release_lock
from hpml.train.selection import save_epoch_weights
from hpml.train.shard_check import explain_data_error, verify_shards
from hpml.train.staging import stage, unstage
from hpml.train.status_writer import StatusWriter
from hpml.train.tracking import Tracker

log = logging.getLogger(__name__)


def _check_val(shards: ShardSet, cfg: Config) -> None:
    if cfg.train.validate and shards.manifest["totals"].get("val", {}).get("count", 0) == 0:
        raise TrainDataError(
            f"{shards.manifest_path} has no val records: training monitors the validation loss "
            "(ReduceLROnPlateau, best.h5). Build the split with a val set and preprocess it, or set "
            "train.validate: false to train without one (no plateau; best.h5 is the last epoch)."
        )


def _log_start(model: tf.keras.Model, cfg: Config, world: World, plan: TrainPlan, lr: float) -> None:
    counts = parameter_counts(model)
    log.info(
        f"model {model.name}: {counts['total']:,} parameters (backbone {counts['backbone']:,}, head "
        f"{counts['head']:,}); {world.size} ranks x batch {cfg.train.batch_size}, {plan.steps} steps/epoch, lr {lr:.3g}"
    )
    if plan.steps != plan.natural_steps:
        log.info("an epoch is %d steps (one pass over the data is %d)", plan.steps, plan.natural_steps)
    if cfg.model.weights is None and cfg.model.backbone != "tiny_cnn":
        log.warning(
            "model.weights is null: the %s backbone trains from random weights (COVID-Net and HPML "
            "start from ImageNet weights; give a local weights file for comparable results)",
            cfg.model.backbone,
        )


def train(cfg: Config, shard_dir: Path, run_dir: Path, restart: bool = False) -> int:
    install_handlers()  # first: a preemption signal during start-up (staging, model build) is kept, not fatal
    world = distributed.init()
    cfg = for_world(cfg, world.size)  # train.global_batch -> this job's batch per rank
    preemption = Preemption(cfg.train.accumulate_steps, cfg.train.stop_check_steps)
    # The run records where its data really came from: evaluation reads the same shards.
    cfg = replace(cfg, data=replace(cfg.data, shards=str(Path(shard_dir).resolve())))
    with phase("startup"):
        if world.is_root:
            run_dir.mkdir(parents=True, exist_ok=True)
            acquire_lock(run_dir)
    try:
        return _train(cfg, Path(shard_dir), run_dir, restart, world, preemption)
    finally:
        unstage()  # this process's node-local staging folder, if it made one (local rank 0)
        if world.is_root:
            release_lock(run_dir)


def _train(cfg: Config, shard_dir: Path, run_dir: Path, restart: bool, world: World, preemption: Preemption) -> int:
    t, run = cfg.train, RunDir(run_dir)
    tracker = Tracker()  # train.tracker: rank 0's MLflow run; nothing with `none`
    if world.is_root:
        if restart:
            set_aside(run_dir)
        run.checkpoints.mkdir(exist_ok=True)
        clear_marker(run_dir)  # this run is the resumption
        save_config(cfg, run.config)
        write_versions(run.versions)
        write_hparams(run_dir, cfg, world.size)  # RUN/tensorboard: the HParams session, before the writer opens
        tracker.start(run_dir, cfg, restart)  # reopens RUN/mlflow_run_id's run on a resume
    shards = None
    if cfg.data.stage_dir:
        with phase("stage"):
            shards = stage(ShardSet.open(shard_dir), Path(cfg.data.stage_dir), world, ("train", "val"))
            distributed.barrier()
    with phase("plan"):
        shards = shards or ShardSet.open(shard_dir)
        plan = TrainPlan(train_shard_labels(shards), t, world)
        _check_val(shards, cfg)
    if cfg.data.verify:
        with phase("verify"):
            verify_shards(shards, world, ("train", "val") if t.validate else ("train",))
    lr = distributed.scaled_lr(t.lr, t.batch_size, t.base_batch, world.size, t.lr_scaling, t.accumulate_steps)
    with phase("build"):
        model = compile_model(cfg, lr, world)
    if world.is_root:
        _log_start(model, cfg, world, plan, lr)
    with phase("restore"):
        state = resume(model, run_dir, cfg, world, plan.steps, lr)
    status = StatusWriter(run_dir, world, state, t.epochs, plan.steps, t.batch_size * world.size)  # RUN/status.json
    warmup = Warmup(t.lr, lr, int(t.warmup_epochs * plan.steps), state.global_step)
    progress = StepProgress(world)
    callbacks = training_callbacks(preemption, warmup, progress, [status.callback()])
    attempt = Attempt(cfg, world, run, shards, plan, model, preemption, callbacks)
    fp = checkpoints.fingerprint(cfg, model)
    # The first row this attempt writes replaces any row of that epoch or later: a previous attempt may
    # have written them before a checkpoint that did not survive (or before --restart set it aside).
    resumed_epoch: int | None = state.epoch
    writer = tf.summary.create_file_writer(str(run.tensorboard)) if world.is_root else None
    while state.epoch < t.epochs:
        start = time.monotonic()
        if state.step_in_epoch < plan.steps:  # none left when a preemption struck on the epoch's last step
            progress.start(f"epoch {state.epoch + 1}/{t.epochs}", plan.steps - state.step_in_epoch)
            with phase("fit"):
                attempt.fit(state)
        if preemption.requested or preemption.at_epoch_end():  # a stop agreed in the epoch, or at its end
            code = _preempted(attempt, state, fp)  # checkpoint and marker first
            if world.is_root:
                tracker.finish("KILLED")  # the requeued job's start() reopens it
            return code
        with phase("validate"):
            row, best = attempt.end_epoch(state, start)
        state = replace(
            state, epoch=state.epoch + 1, step_in_epoch=0, partial_loss=0.0, partial_accuracy=0.0, lr=attempt.lr()
        )
        with phase("checkpoint"):
            if world.is_root:
                record_epoch(run_dir, writer, row, state.epoch, t.epochs, resumed_epoch)
                tracker.log_epoch(row, state.epoch)  # step = the log line's epoch (1-based)
                status.epoch_end(row, state)
                save_epoch_weights(model, run, t, row, best)
                checkpoints.save(model, run.checkpoints, state, fp)
            resumed_epoch = None
            distributed.barrier()  # nobody races ahead of a checkpoint being written
    if world.is_root:
        tracker.finish()  # FINISHED + config.yaml, history.csv, checkpoints/best.json
    log.info("training done; weights sha256 %s", weights_digest(model))
    return 0


@dataclass
class Attempt:
    """One start or resumption of a run: what every epoch of it trains with."""

    cfg: Config
    world: World
    run: RunDir
    shards: ShardSet
    plan: TrainPlan
    model: tf.keras.Model
    preemption: Preemption
    callbacks: list

    def lr(self) -> float:
        return float(self.model.optimizer.learning_rate.numpy())

    def class_weight(self) -> dict[int, float] | None:
        weights = {i: self.cfg.train.class_weights[c] for i, c in enumerate(CLASSES)}
        return None if len(set(weights.values())) == 1 else weights

    def fit(self, state: TrainState) -> None:
        """Train the rest of the state's epoch (one Keras `fit`); fold its steps and metrics into `state`."""
        remaining = self.plan.steps - state.step_in_epoch
        data = train_dataset(self.plan, self.cfg, state.epoch, state.step_in_epoch)
        try:
            fit = self.model.fit(
                data,
                epochs=state.epoch + 1,
                initial_epoch=state.epoch,
                steps_per_epoch=remaining,
                class_weight=self.class_weight(),
                callbacks=self.callbacks,
                verbose=0,
            )
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as exc:
            files = sorted({span.file for stream in self.plan.streams(state.epoch) for span in stream.spans})
            raise explain_data_error(exc, files, self.shards.root) from None
        done, before = self.preemption.steps_done, state.step_in_epoch
        if done:  # epoch means so far, as if the epoch had been one fit call
            weight = done / (before + done)
            state.partial_loss += (fit.history["loss"][-1] - state.partial_loss) * weight
            state.partial_accuracy += (fit.history["accuracy"][-1] - state.partial_accuracy) * weight
        state.step_in_epoch += done
        state.global_step += done

    def end_epoch(self, state: TrainState, start: float) -> tuple[dict, bool]:
        """Validation, the LR decision and the best epoch, alike on every rank: (history row, best so far?)."""
        t = self.cfg.train
        distributed.average_non_trainable(self.model)
        val = validate(self.model, self.shards, self.cfg, self.world) if t.validate else no_validation()
        lr_now = self.lr()
        row = {
            "epoch": state.epoch,
            "loss": state.partial_loss,
            "accuracy": state.partial_accuracy,
            **val,
            "lr": lr_now,
            "seconds": round(time.monotonic() - start, 2),
        }
        if not t.validate:
            return row, True  # without validation, best.h5 is the last epoch
        value = best_epoch.score(t.monitor, row)
        best = value < state.best_score  # strictly better: a tie keeps the earlier epoch
        if best:
            state.best_score, state.best_epoch = value, state.epoch
        new_lr, _ = plateau_step(state, value, lr_now, t)
        if new_lr != lr_now:
            self.model.optimizer.learning_rate.assign(new_lr)
            if self.world.is_root:
                log.info(
                    f"{t.monitor} has not improved by {t.plateau_min_delta:g} for {t.plateau_patience} epochs: "
                    f"lr -> {new_lr:.3g}"
                )
        return row, best


def _preempted(attempt: Attempt, state: TrainState, fp: dict) -> int:
    state.lr = attempt.lr()
    with phase("checkpoint"):
        if attempt.world.is_root:
            checkpoints.save(attempt.model, attempt.run.checkpoints, state, fp)
            write_marker(attempt.run.path, state.epoch, state.step_in_epoch)  # names this job + restart count
            log.warning(
                f"preempted at epoch {state.epoch} step {state.step_in_epoch}: checkpoint saved; "
                f"exit {REQUEUE_EXIT_CODE} = requeue me"
            )
        distributed.barrier()
    return REQUEUE_EXIT_CODE
