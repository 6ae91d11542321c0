"""What happens between two epochs, the same on every rank: validation, the LR decision, records.

Validation is exact: each rank predicts its files of the val split and the sums are
allreduced, so every rank sees the same numbers and takes the same ReduceLROnPlateau decision
(hpml.train.plateau) without further messages. Rank 0 alone writes history.csv and TensorBoard.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml.core.config import Config
from hpml.core.files import write_text_atomic
from hpml.core.runfiles import RunDir
from hpml.core.world import World
from hpml.parallel import distributed
from hpml.shards.shardset import ShardSet
from hpml.train.data import eval_dataset, rank_files
from hpml.train.shard_check import explain_data_error

log = logging.getLogger(__name__)
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def validate(model: tf.keras.Model, shards: ShardSet, cfg: Config, world: World) -> tuple[float, float]:
    """Exact loss and accuracy over the whole val split: each rank its files, sums allreduced."""
    totals = np.zeros(3)  # loss sum, correct, count
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    try:
        for x, y in eval_dataset(shards, "val", cfg, cfg.eval.batch_size, world):
            p = model(x, training=False)
            totals += [float(loss_fn(y, p)), float(tf.reduce_sum(tf.cast(tf.argmax(p, 1) == y, tf.float32))), len(y)]
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as exc:
        raise explain_data_error(exc, rank_files(shards, "val", world), shards.root) from None
    loss_sum, correct, count = distributed.allreduce_sum(totals, "validate")
    return loss_sum / max(count, 1), correct / max(count, 1)


def weights_digest(model: tf.keras.Model) -> str:
    """sha256 of every weight, trainable or not (BatchNorm statistics included)."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def append_history(path: Path, row: dict, resumed_epoch: int | None = None) -> None:
    """Add the epoch's row; on an attempt's first epoch, drop rows of the epochs it redoes."""
    rows = []
    if path.is_file():
        with path.open() as fh:
            rows = [r for r in csv.DictReader(fh) if resumed_epoch is None or int(r["epoch"]) < resumed_epoch]
    rows.append(row)
    text = io.StringIO()
    writer = csv.DictWriter(text, HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def record_epoch(run_dir: Path, writer, row: dict, epoch: int, epochs: int, resumed_epoch: int | None) -> None:
    """Rank 0: the epoch's line in the log, history.csv and TensorBoard."""
    val = f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f} " if row["val_loss"] != "" else ""
    log.info(
        "epoch %d/%d: loss %.4f acc %.4f %slr %.3g (%.1fs)",
        epoch,
        epochs,
        row["loss"],
        row["accuracy"],
        val,
        row["lr"],
        row["seconds"],
    )
    append_history(RunDir(run_dir).history, row, resumed_epoch)
    with writer.as_default(step=epoch):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            if row[key] != "":
                tf.summary.scalar(key, row[key])
