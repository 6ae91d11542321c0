"""What happens between two epochs, the same on every rank: validation, the LR decision, records.

Validation is exact: each rank predicts its files of the val split and the loss sum and the
confusion matrix are allreduced, so every rank sees the same numbers (per-class sensitivity and
PPV, macro F1: hpml.core.metrics) and takes the same plateau and best-epoch decisions
(hpml.train.plateau, hpml.train.selection) without further messages. Rank 0 alone writes
history.csv, TensorBoard and the weights files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml.core import history
from hpml.core.config import CLASSES, Config
from hpml.core.files import write_text_atomic
from hpml.core.metrics import confusion, from_confusion
from hpml.core.runfiles import RunDir
from hpml.core.world import World
from hpml.parallel import distributed
from hpml.shards.shardset import ShardSet
from hpml.train.data import eval_dataset, rank_files
from hpml.train.shard_check import explain_data_error

log = logging.getLogger(__name__)
HISTORY_FIELDS = history.FIELDS


def validate(model: tf.keras.Model, shards: ShardSet, cfg: Config, world: World) -> dict:
    """Exact metrics over the whole val split: each rank its files, loss sum and confusion allreduced.

    val_loss is defined as Keras defines the training loss, less the class weights (Keras'
    validation_data has none): mean cross-entropy plus the regularisation terms (the flatten
    head's L2), so the two are comparable and equal Covid19-HPML's val_loss.
    """
    n = len(CLASSES)
    totals = np.zeros(1 + n * n)  # loss sum, then the confusion matrix (rows: true class)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    try:
        for x, y in eval_dataset(shards, "val", cfg, cfg.eval.batch_size, world):
            p = model(x, training=False)
            totals[0] += float(loss_fn(y, p))
            totals[1:] += confusion(y.numpy(), np.argmax(p.numpy(), 1)).ravel()
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as exc:
        raise explain_data_error(exc, rank_files(shards, "val", world), shards.root) from None
    totals = distributed.allreduce_sum(totals, "validate")
    cm = np.rint(totals[1:]).astype(np.int64).reshape(n, n)
    metrics = from_confusion(cm)
    regularisation = float(tf.add_n(model.losses)) if model.losses else 0.0
    row = {
        "val_loss": totals[0] / max(metrics["count"], 1) + regularisation,
        "val_accuracy": metrics["accuracy"],
        "val_macro_f1": metrics["macro_f1"],
        "val_confusion": "/".join(" ".join(map(str, r)) for r in cm.tolist()),  # rows: true class
    }
    for c in CLASSES:
        row[f"val_sensitivity_{c}"] = metrics["sensitivity"][c]
        row[f"val_ppv_{c}"] = metrics["ppv"][c]
    return row


def no_validation() -> dict:
    """The validation columns of an epoch trained with train.validate: false."""
    return {k: "" for k in HISTORY_FIELDS if k.startswith("val_")}


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
    val = ""
    if row["val_loss"] != "":
        per_class = " ".join(f"{c} {row[f'val_sensitivity_{c}']:.3f}/{row[f'val_ppv_{c}']:.3f}" for c in CLASSES)
        val = (
            f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f} val_f1 {row['val_macro_f1']:.4f} "
            f"sens/ppv {per_class} "
        )
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
        for key in HISTORY_FIELDS[1:]:
            if key not in ("val_confusion", "seconds") and row[key] != "":
                tf.summary.scalar(key, row[key])
