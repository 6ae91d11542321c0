"""Full training state on disk: weights, optimizer, position in the data, LR schedule state.

A checkpoint is `ckpt-<global step>` (TensorFlow's index + data files: model and optimizer
variables, the LR among them) plus `ckpt-<global step>.json` (epoch, step in epoch, plateau
state, ...), written last and atomically: a checkpoint without its JSON is incomplete and
ignored. Restore walks from the newest back, so a corrupt newest one falls back to the
previous. Only rank 0 writes; every rank reads the same files.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import tensorflow as tf

from hpml.records import write_json_atomic

log = logging.getLogger(__name__)
KEEP = 3
_NAME = re.compile(r"^ckpt-(\d+)\.json$")


@dataclass
class TrainState:
    epoch: int = 0  # epochs fully done
    step_in_epoch: int = 0  # steps done in the current epoch (non-zero after preemption)
    global_step: int = 0
    best_val_loss: float = float("inf")
    plateau_wait: int = 0


def _tracker(model: tf.keras.Model) -> tf.train.Checkpoint:
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)  # create slots now so restore fills them
    return tf.train.Checkpoint(model=model, optimizer=optimizer)


def save(model: tf.keras.Model, directory: Path, state: TrainState) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / f"ckpt-{state.global_step}"
    _tracker(model).write(str(prefix))
    write_json_atomic(directory / f"ckpt-{state.global_step}.json", asdict(state))
    for old in complete(directory)[KEEP:]:
        for path in directory.glob(f"{old.name}.*"):
            path.unlink(missing_ok=True)
    return prefix


def complete(directory: Path) -> list[Path]:
    """Prefixes of complete checkpoints, newest first."""
    found = []
    for meta in directory.glob("ckpt-*.json") if directory.is_dir() else []:
        if m := _NAME.match(meta.name):
            found.append((int(m.group(1)), directory / f"ckpt-{m.group(1)}"))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def restore(model: tf.keras.Model, directory: Path) -> TrainState | None:
    """Load the newest readable checkpoint into `model` (and its optimizer); None if none."""
    tracker = _tracker(model)
    for prefix in complete(directory):
        try:
            state = TrainState(**json.loads(prefix.with_name(prefix.name + ".json").read_text()))
            tracker.read(str(prefix)).assert_existing_objects_matched()
        except Exception as exc:  # TF raises OpError, IndexError, ValueError... for damaged files
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", prefix.name,
                        str(exc).splitlines()[0][:200])  # fmt: skip
            continue
        log.info("resumed from %s: epoch %d, step %d", prefix.name, state.epoch, state.step_in_epoch)
        return state
    return None


def save_weights_atomic(model: tf.keras.Model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save_weights(str(tmp))
    tmp.replace(path)


def load_trained(run_dir: Path, which: str = "best", overrides=()) -> tuple:
    """(config, model with weights, description) for evaluation, prediction and export.

    which: `best` (lowest validation loss), `last` (newest complete checkpoint), or a path to
    a `.h5` weights file or a checkpoint prefix.
    """
    from hpml.config import load_config
    from hpml.models import build_model

    cfg = load_config(run_dir / "config.yaml", overrides)
    model = build_model(cfg.model, cfg.data.image_size)
    ckpt_dir = run_dir / "checkpoints"
    if which == "best":
        path = ckpt_dir / "best.h5"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no best weights (has {run_dir} finished an epoch?)")
        model.load_weights(str(path))
        return cfg, model, str(path)
    if which == "last":
        prefixes = complete(ckpt_dir)
        if not prefixes:
            raise FileNotFoundError(f"{ckpt_dir}: no complete checkpoint")
        which = str(prefixes[0])
    if which.endswith(".h5"):
        model.load_weights(which)
    else:
        tf.train.Checkpoint(model=model).read(which).expect_partial().assert_existing_objects_matched()
    return cfg, model, which
