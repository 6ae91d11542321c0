"""`hpml evaluate`: exact metrics over a whole split, every image counted once across ranks.

Each rank predicts its share of the split's shards (all of them, no dropped remainder), the
3x3 confusion matrices are summed with an allreduce, and the metrics come from that sum.
Rank 0 writes RUN/eval/<split>/: metrics.json, report.md, confusion_matrix.png,
predictions.csv, and RUN/curves.png from history.csv.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np

from hpml import distributed
from hpml.checkpoints import load_trained
from hpml.config import CLASSES
from hpml.data import eval_dataset
from hpml.metrics import confusion, from_confusion
from hpml.records import MANIFEST, write_json_atomic
from hpml.report import markdown, plot_confusion, plot_curves

log = logging.getLogger(__name__)


def evaluate(run_dir: Path, split: str | None, which: str, shards: Path | None, overrides=()) -> dict:
    world = distributed.init()
    cfg, model, description = load_trained(run_dir, which, overrides)
    split = split or cfg.eval.split
    shard_dir = Path(shards or cfg.data.shards)
    rows, labels, predicted = [], [], []
    for images, y, meta in eval_dataset(shard_dir, split, cfg, cfg.eval.batch_size, world, with_meta=True):
        probs = model(images, training=False).numpy()
        labels.extend(y.numpy().tolist())
        predicted.extend(probs.argmax(1).tolist())
        for i in range(len(probs)):
            rows.append([meta["source"][i].numpy().decode(), meta["filename"][i].numpy().decode(),
                         meta["patient"][i].numpy().decode(), CLASSES[int(y[i])], CLASSES[int(probs[i].argmax())],
                         *(f"{p:.6f}" for p in probs[i])])  # fmt: skip
    cm = distributed.allreduce_sum(confusion(np.array(labels, int), np.array(predicted, int)), "confusion")
    all_rows = distributed.gather_objects(rows, "predictions")
    metrics = from_confusion(cm)
    metrics.update(split=split, checkpoint=description, ranks=world.size,
                   manifest_sha256=hashlib.sha256((shard_dir / MANIFEST).read_bytes()).hexdigest())  # fmt: skip
    if world.is_root:
        _write(run_dir, split, metrics, sorted(r for part in all_rows for r in part))
    return metrics


def _write(run_dir: Path, split: str, metrics: dict, rows: list) -> None:
    out = run_dir / "eval" / split
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", metrics)
    (out / "report.md").write_text(markdown(metrics, split, metrics["checkpoint"]))
    plot_confusion(metrics["confusion_matrix"], out / "confusion_matrix.png", f"{split} split")
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "file", "patient", "label", "predicted", *(f"p_{c}" for c in CLASSES)])
        writer.writerows(rows)
    plot_curves(run_dir / "history.csv", run_dir / "curves.png")
    log.info("wrote %s (%d images)", out, metrics["count"])
    print(markdown(metrics, split, metrics["checkpoint"]))
    print(f"report: {out / 'report.md'}; metrics: {out / 'metrics.json'}")
