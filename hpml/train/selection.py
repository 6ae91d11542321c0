"""The weights files of model selection: best.h5 (+ best.json) and the per-epoch files.

Which epoch is the best is hpml.core.best_epoch's rule (`train.monitor`, strictly best);
best.h5 holds that epoch's weights and best.json says which epoch and value, so
`--checkpoint best`, `hpml sweep report` and a reader of history.csv name the same epoch. The
LR plateau (hpml.train.plateau) watches the same value with Keras' `min_delta`: an epoch can be
the best without counting as an improvement for the plateau.

Per-epoch weights (`train.keep_checkpoints`: N newest, `all`, or 0) are weights only, named
like the seed's `cp-{epoch:02d}-{val_loss:.2f}.hdf5`: `epochs/epoch-003-val_loss-0.4321.h5`.
The full state (optimizer included) stays with the newest checkpoints (hpml.train.checkpoints).
"""

from __future__ import annotations

import re
from pathlib import Path

import tensorflow as tf

from hpml.core.best_epoch import column
from hpml.core.config import TrainConfig
from hpml.core.files import write_json_atomic
from hpml.core.runfiles import RunDir
from hpml.train.checkpoints import save_weights_atomic

_EPOCH_FILE = re.compile(r"^epoch-(\d+)(-.*)?\.h5$")


def epoch_file(directory: Path, epoch: int, monitor: str, row: dict) -> Path:
    """`epochs/epoch-003-val_loss-0.4321.h5` (epoch counted from 1, as in the logs)."""
    value = row.get(column(monitor))
    tag = f"-{monitor}-{float(value):.4f}" if value not in ("", None) else ""
    return directory / f"epoch-{epoch:03d}{tag}.h5"


def to_prune(directory: Path, keep: int | str) -> list[Path]:
    """Per-epoch files beyond the `keep` newest epochs (none for `all`)."""
    if keep == "all" or not directory.is_dir():
        return []
    files = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_FILE.match(p.name)))
    return [p for _, p in files[: max(len(files) - int(keep), 0)]]


def save_epoch_weights(model: tf.keras.Model, run: RunDir, t: TrainConfig, row: dict, best: bool) -> None:
    """Rank 0, after an epoch: best.h5 + best.json when it is the best so far; the per-epoch file."""
    if best:
        save_weights_atomic(model, run.best)
        value = row.get(column(t.monitor))
        info = {"epoch": int(row["epoch"]), "monitor": t.monitor, "value": None if value == "" else float(value)}
        write_json_atomic(run.best_info, info)  # after best.h5: it never names weights not yet written
    if t.keep_checkpoints == 0:
        return
    run.epochs.mkdir(parents=True, exist_ok=True)
    path = epoch_file(run.epochs, int(row["epoch"]) + 1, t.monitor, row)
    for stale in run.epochs.glob(f"epoch-{int(row['epoch']) + 1:03d}*.h5"):  # an epoch redone by a restart
        if stale != path:
            stale.unlink()
    save_weights_atomic(model, path)
    for old in to_prune(run.epochs, t.keep_checkpoints):
        old.unlink(missing_ok=True)
