"""Full training state on disk: weights, optimizer, position in the data, LR schedule state.

A checkpoint is `ckpt-<global step>` (TensorFlow's index + data files: model and optimizer
variables) plus `ckpt-<global step>.json` (the TrainState, the model's fingerprint, and a write
sequence number), written last and atomically: a checkpoint without its JSON is incomplete
and ignored. "Newest" always means highest write sequence, never highest step, so a restarted
run's first checkpoint is never mistaken for an old one, and pruning never deletes the
checkpoint just written. A write that fails (disk full, I/O error) removes its own partial
files and leaves every earlier checkpoint untouched. Only rank 0 reads or writes them
(hpml.train.resume decides and broadcasts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import tensorflow as tf

from hpml.core.config import Config, load_config
from hpml.core.errors import UsageError
from hpml.core.failure import at
from hpml.core.files import write_json_atomic
from hpml.core.runfiles import RunDir
from hpml.models.build import build_model
from hpml.models.weights_import import import_weights, save_weights_file

log = logging.getLogger(__name__)
KEEP = 3
_NAME = re.compile(r"^ckpt-(\d+)\.json$")


@dataclass
class TrainState:
    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # steps done in the current epoch (non-zero after preemption)
    global_step: int = 0
    plateau_best: float = float("inf")  # ReduceLROnPlateau's `best`, as a loss (hpml.train.selection.score)
    best_score: float = float("inf")  # the best epoch's monitored value, as a loss: best.h5
    best_epoch: int = -1  # its history.csv epoch
    plateau_wait: int = 0
    plateau_cooldown: int = 0
    partial_loss: float = 0.0  # mean train loss and accuracy over the steps done this epoch
    partial_accuracy: float = 0.0
    lr: float = 0.0  # the optimizer's learning rate at the save
    world_size: int = 1  # who wrote it: resuming on another rank count or batch rescales
    batch_size: int = 0
    steps_per_epoch: int = 0


class IncompatibleCheckpoint(UsageError, ValueError):
    """A checkpoint written for another model, optimizer or precision: never silently reused."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the previous ones are intact."""


def fingerprint(cfg: Config, model: tf.keras.Model) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed into `model`."""
    shapes = [(v.name, tuple(v.shape)) for v in (*model.variables, *model.optimizer.variables)]
    return {
        "backbone": cfg.model.backbone,
        "head": cfg.model.head,
        "image_size": cfg.data.image_size,
        "optimizer": cfg.train.optimizer + ("+amsgrad" if cfg.train.optimizer == "adam" and cfg.train.amsgrad else ""),
        "mixed_precision": cfg.train.mixed_precision,
        "variables": hashlib.sha256(repr(shapes).encode()).hexdigest()[:16],
    }


def tracker(model: tf.keras.Model) -> tf.train.Checkpoint:
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)  # create slots now so restore fills them
    return tf.train.Checkpoint(model=model, optimizer=optimizer)


def complete(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(prefix, metadata) of complete checkpoints, newest written first."""
    found = []
    for meta_path in directory.glob("ckpt-*.json") if directory.is_dir() else []:
        if not _NAME.match(meta_path.name):
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue  # a torn JSON cannot happen (atomic rename); an unreadable one is no checkpoint
        if "state" not in meta:  # written by an hpml before fingerprints: the state alone
            meta = {"state": meta, "fingerprint": None, "seq": meta.get("global_step", 0)}
        found.append((meta["seq"], meta_path.with_suffix(""), meta))
    return [(prefix, meta) for _, prefix, meta in sorted(found, key=lambda f: f[0], reverse=True)]


def save(model: tf.keras.Model, directory: Path, state: TrainState, fp: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    existing = complete(directory)
    prefix = directory / f"ckpt-{state.global_step}"
    meta_path = prefix.with_suffix(".json")
    meta_path.unlink(missing_ok=True)  # a step written again is incomplete until its JSON is back
    try:
        tracker(model).write(str(prefix))
        at("checkpoint_write")  # injected faults strike with the data files written, as a full disk would
        write_json_atomic(
            meta_path,
            {"state": asdict(state), "fingerprint": fp, "seq": 1 + max((m["seq"] for _, m in existing), default=0)},
        )
    except (OSError, tf.errors.OpError) as exc:
        _remove(prefix)
        earlier = next((p.name for p, _ in existing if p != prefix), None)
        kept = f"the previous checkpoint {earlier} is intact" if earlier else "there is no earlier checkpoint"
        raise CheckpointWriteError(
            f"writing checkpoint {prefix} failed ({getattr(exc, 'message', None) or exc}); {kept}. "
            "Free space (or fix the file system) and run the same command again to resume."
        ) from exc
    for old, _ in complete(directory)[KEEP:]:
        if old != prefix:
            _remove(old)
    return prefix


def _remove(prefix: Path) -> None:
    prefix.with_suffix(".json").unlink(missing_ok=True)  # first: what is left is incomplete
    for path in prefix.parent.glob(f"{prefix.name}.*"):
        path.unlink(missing_ok=True)
    for temp in prefix.parent.glob(f"{prefix.name}_temp*"):  # TensorFlow's staging folder
        shutil.rmtree(temp, ignore_errors=True)


def restore(model: tf.keras.Model, directory: Path, fp: dict[str, Any]) -> tuple[TrainState, Path] | None:
    """Load the newest readable checkpoint into `model` (and its optimizer); None if none.

    Raises IncompatibleCheckpoint when the newest one was written for another setup: that is a
    change of configuration, not damage, so it is not skipped in favour of an older one.
    """
    reader = tracker(model)
    for prefix, meta in complete(directory):
        if meta["fingerprint"] is not None and meta["fingerprint"] != fp:
            diff = {k: (meta["fingerprint"].get(k), v) for k, v in fp.items() if meta["fingerprint"].get(k) != v}
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items())
            raise IncompatibleCheckpoint(
                f"{prefix} was written for another setup ({what}); refusing to resume it. Use --restart to start "
                "this run over (its checkpoints and history are kept aside), or another --run-dir."
            )
        try:
            at("checkpoint_read")
            reader.read(str(prefix)).assert_existing_objects_matched()
        except Exception as exc:  # TF raises OpError, IndexError, ValueError... for damaged files
            log.warning(
                "checkpoint %s is unreadable (%s); trying the previous one", prefix.name, str(exc).splitlines()[0][:200]
            )
            continue
        known = {f.name for f in fields(TrainState)}
        saved = dict(meta["state"])
        if "best_val_loss" in saved:  # written before train.monitor: the plateau watched val_loss
            saved.setdefault("plateau_best", saved["best_val_loss"])
        return TrainState(**{k: v for k, v in saved.items() if k in known}), prefix
    return None


def save_weights_atomic(model: tf.keras.Model, path: Path) -> None:
    """hpml.models.weights_import's atomic writer, its failure said as a checkpoint failure."""
    try:
        save_weights_file(model, path)  # removes its temporary file when it fails
    except (OSError, RuntimeError) as exc:  # h5py reports a full disk as either
        kept = f"the previous {path.name} is intact" if path.exists() else f"there is no {path.name} yet"
        raise CheckpointWriteError(f"writing {path} failed ({exc}); {kept}. Free space and rerun to resume.") from exc


def load_trained(run_dir: Path | None, which: str = "best", overrides=(), config: Path | None = None) -> tuple:
    """(config, model with weights, description) for evaluation, prediction and export.

    which: `best` (the train.monitor best epoch, hpml.train.selection), `last` (newest complete
    checkpoint), or any weights file hpml can load (hpml.models.weights_import: a .h5 of hpml or
    of the seed, a checkpoint prefix). The run's config.yaml describes the model; without a run
    directory, `config` does.
    """
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.config.is_file():
        cfg = load_config(run.config, overrides)
    elif config is not None:
        cfg = load_config(config, overrides)
    else:
        where = f"{run.config} not found" if run else "no --run-dir"
        raise UsageError(f"{where}: give --config (the model the weights are for) with --checkpoint FILE")
    # Every weight comes from the file: the backbone's ImageNet file is not needed (nor read).
    model = build_model(replace(cfg.model, weights=None), cfg.data.image_size)
    if which in ("best", "last") and run is None:
        raise UsageError(f"--checkpoint {which} needs --run-dir; without one give a weights file")
    if which == "best":
        if not run.best.is_file():
            raise FileNotFoundError(f"{run.best}: no best weights (has {run_dir} finished an epoch?)")
        model.load_weights(str(run.best))
        return cfg, model, str(run.best)
    if which == "last":
        found = complete(run.checkpoints)
        if not found:
            raise FileNotFoundError(f"{run.checkpoints}: no complete checkpoint")
        tf.train.Checkpoint(model=model).read(str(found[0][0])).expect_partial().assert_existing_objects_matched()
        return cfg, model, str(found[0][0])
    report = import_weights(Path(which), model)
    log.info("%s", report.lines()[0])
    return cfg, model, which
