"""hpml from Python (a notebook, a script): values returned, nothing printed.

    from hpml import api

    cfg = api.load_config("configs/demo.yaml", ["train.lr=1e-4"])  # the typed Config `--set` builds
    rows = api.predict(["image.png", "folder/"], run_dir="runs/demo")
    # [{"file": "image.png", "probabilities": {"normal": 0.1, "pneumonia": 0.2, "COVID-19": 0.7},
    #   "predicted": "COVID-19", "error": None}, ...]
    metrics = api.evaluate("runs/demo", split="val")  # what metrics.json holds

The same code as the commands (`hpml predict`, `hpml evaluate`), without their printing and exit
codes: an unreadable file is a row with `error` set (and `probabilities`/`predicted` None), a
missing run or weights file raises. TensorFlow is imported on the first call of `predict` or
`evaluate`, not by `import hpml.api`. Research software: these are not diagnoses.

Layer: the last, beside hpml.cli (tests/unit/test_layers.py); nothing in hpml imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hpml.core.config import CLASSES, Config, load_config

__all__ = ["CLASSES", "Config", "evaluate", "load_config", "predict"]

PathLike = str | os.PathLike


def predict(
    files: PathLike | Sequence[PathLike],
    run_dir: PathLike | None = None,
    config: PathLike | None = None,
    checkpoint: str = "best",
    overrides: Sequence[str] = (),
) -> list[dict]:
    """Classify image files (PNG, JPEG, DICOM; a folder means every such file in it, recursively).

    With `run_dir`: the run's model (RUN/config.yaml) and its `checkpoint`: "best" (the train.monitor
    best epoch), "last", or any weights file hpml can load. Without: `config` names the model and
    `checkpoint` must be a weights file. Returns one dict per file found, in order:
    `file` (str), `probabilities` ({class: float}, summing to 1), `predicted` (the class with the
    highest probability), `error` (why the file could not be classified, else None).
    """
    from hpml.serve.predict import classify

    if run_dir is None and (config is None or checkpoint in ("best", "last")):
        raise ValueError("api.predict needs run_dir, or config with checkpoint=<a weights file>")
    targets = [files] if isinstance(files, str | os.PathLike) else list(files)
    found = classify(
        None if run_dir is None else Path(run_dir),
        [Path(t) for t in targets],
        checkpoint,
        None if config is None else Path(config),
        overrides,
    )
    return found.rows()


def evaluate(
    run_dir: PathLike,
    split: str | None = None,
    checkpoint: str | None = None,
    shards: PathLike | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """Evaluate a trained run on `split` ("val" or "test"; None: the run's eval.split) with `checkpoint`
    (None: eval.checkpoint, "best" by default; "last"; a weights file), on the run's shards (data.shards)
    or `shards`. Returns the metrics (accuracy, per-class sensitivity, ppv and f1, confusion_matrix,
    intervals, bootstrap, areas, calibration: what RUN/eval/SPLIT/metrics.json holds) and writes that report as
    `hpml evaluate` does. Runs in this process; under `mpirun` every rank takes its share.
    """
    from hpml.evaluation.evaluate import evaluate as evaluate_run

    return evaluate_run(Path(run_dir), split, checkpoint, None if shards is None else Path(shards), overrides)
