"""`hpml evaluate`: exact metrics over a whole split, every image counted once across ranks.

Each rank predicts its share of the split's shards (all of them, no dropped remainder), the
3x3 confusion matrices are summed with an allreduce, and the metrics come from that sum. The
per-image predictions (float32 probabilities, exact) are gathered from all ranks; intervals,
ROC/PR curves and calibration are computed from them, after checking that they reproduce the
summed matrix. Rank 0 writes RUN/eval/<split>/: metrics.json, report.md, confusion_matrix.png,
roc_pr.png, reliability.png, curves.json, predictions.csv, and RUN/curves.png from history.csv.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from hpml.core.config import CLASSES, EvalConfig, load_config
from hpml.core.failure import at, phase
from hpml.core.files import write_json_atomic, write_text_atomic
from hpml.core.metrics import confusion, from_confusion
from hpml.core.provenance import append, record
from hpml.core.runfiles import PROVENANCE, RunDir
from hpml.evaluation import calibration, curves, intervals
from hpml.evaluation.plots import plot_reliability, plot_roc_pr
from hpml.evaluation.report import markdown, plot_confusion, plot_curves
from hpml.parallel import distributed
from hpml.shards.shardset import ShardSet
from hpml.train.checkpoints import load_trained
from hpml.train.data import eval_dataset, rank_files
from hpml.train.shard_check import explain_data_error

log = logging.getLogger(__name__)


def evaluate(
    run_dir: Path, split: str | None, which: str | None, shards: Path | None, overrides=(), config: Path | None = None
) -> dict:
    """`which` checkpoint (None: the run's eval.checkpoint) on `split` (None: eval.split).

    `run_dir` is where the report goes (RUN/eval/SPLIT); without a config.yaml there, `config`
    describes the model and `which` must be a weights file.
    """
    world = distributed.init()
    with phase("load"):
        run_config = RunDir(run_dir).config
        which = which or load_config(run_config if run_config.is_file() else config, overrides).eval.checkpoint
        cfg, model, description = load_trained(run_dir, which, overrides, config)
        split = split or cfg.eval.split
        shard_set = ShardSet.open(shards or cfg.data.shards)
    with phase("predict"):
        rows, labels, predicted = _predict(model, shard_set, split, cfg, world)
    with phase("gather"):
        cm = distributed.allreduce_sum(confusion(np.array(labels, int), np.array(predicted, int)), "confusion")
        all_rows = sorted(r for part in distributed.gather_objects(rows, "predictions") for r in part)
    metrics = from_confusion(cm)
    metrics.update(
        split=split,
        checkpoint=description,
        ranks=world.size,
        manifest_sha256=hashlib.sha256(shard_set.manifest_path.read_bytes()).hexdigest(),
    )
    found = uncertainty(all_rows, cm, cfg.eval)  # every rank: identical (seeded), and cheap
    metrics.update({k: v for k, v in found.items() if k != "curves"})
    if world.is_root:
        with phase("report"):
            _write(run_dir, split, metrics, all_rows, found["curves"])
    return metrics


def _predict(model, shards: ShardSet, split: str, cfg, world) -> tuple[list, list, list]:
    """This rank's share of the split: (rows, labels, predicted classes)."""
    rows, labels, predicted = [], [], []
    try:
        for images, y, meta in eval_dataset(shards, split, cfg, cfg.eval.batch_size, world, with_meta=True):
            at("predict_batch")
            probs = model(images, training=False).numpy()
            labels.extend(y.numpy().tolist())
            predicted.extend(probs.argmax(1).tolist())
            for i in range(len(probs)):
                rows.append(
                    (
                        meta["source"][i].numpy().decode(),
                        meta["filename"][i].numpy().decode(),
                        meta["patient"][i].numpy().decode(),
                        int(y[i]),
                        *map(float, probs[i]),
                    )
                )
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as exc:
        raise explain_data_error(exc, rank_files(shards, split, world), shards.root) from None
    return rows, labels, predicted


def uncertainty(rows: list, cm: np.ndarray, settings: EvalConfig) -> dict:
    """Intervals, ROC/PR curves and calibration from the gathered per-image predictions."""
    labels = np.array([r[3] for r in rows], int)
    probs = np.array([r[4:] for r in rows], float).reshape(-1, len(CLASSES))
    predicted = probs.argmax(1)
    if not np.array_equal(confusion(labels, predicted), np.asarray(cm)):  # the gathered rows ARE the counted ones
        raise RuntimeError("gathered predictions do not reproduce the allreduced confusion matrix")
    patients = [(r[0], r[2]) for r in rows]  # patient ids are only unique within a source
    found = curves.one_vs_rest(labels, probs)
    return {
        "intervals": intervals.per_class(cm),
        "bootstrap": intervals.bootstrap(
            labels, predicted, patients, settings.bootstrap_resamples, settings.bootstrap_seed
        ),
        "areas": curves.areas(found),
        "calibration": calibration.reliability(labels, probs, settings.calibration_bins),
        "curves": found,
    }


def _write(run_dir: Path, split: str, metrics: dict, rows: list, found: dict) -> None:
    out = RunDir(run_dir).eval(split)
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(metrics, split, metrics["checkpoint"])
    plot_confusion(metrics["confusion_matrix"], out / "confusion_matrix.png", f"{split} split")
    plot_roc_pr(found, out / "roc_pr.png", f"{split} split, {metrics['count']} images")
    plot_reliability(metrics["calibration"], out / "reliability.png", f"Reliability, {split} split")
    write_text_atomic(out / "curves.json", json.dumps(found) + "\n")
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "file", "patient", "label", "predicted", *(f"p_{c}" for c in CLASSES)])
        # %.9g: a float32 probability round-trips exactly, so the file reproduces the curves.
        writer.writerows(
            [*r[:3], CLASSES[r[3]], CLASSES[int(np.argmax(r[4:]))], *(f"{p:.9g}" for p in r[4:])] for r in rows
        )
    write_text_atomic(out / "report.md", report)
    # Beside metrics.json, not in it: its shape stays what compare, sweep report and the model card
    # read, and a re-evaluation keeps the earlier evaluations' records (the last line is this one).
    append(out / PROVENANCE, record("evaluate"))
    write_json_atomic(out / "metrics.json", metrics)  # last: its presence means the rest is complete
    plot_curves(RunDir(run_dir).history, RunDir(run_dir).curves)
    log.info("wrote %s (%d images)", out, metrics["count"])
    print(report)
    print(f"report: {out / 'report.md'}; metrics: {out / 'metrics.json'}; curves: {out / 'roc_pr.png'}")
