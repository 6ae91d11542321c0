"""history.csv: one row per epoch, written by rank 0 (hpml.train.epoch_end), read by status,
sweeps, reports and evaluation. Its columns and how they read are defined here, once.

Every column is a number except `val_confusion` (the validation confusion matrix, rows = true
class, "a b c/d e f/g h i"); an empty cell is a value that was not measured (an epoch trained
with train.validate: false) and is left out of the row that `read` returns.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hpml.core.config import CLASSES

PER_CLASS = [f"val_{m}_{c}" for m in ("sensitivity", "ppv") for c in CLASSES]
FIELDS = [
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    *PER_CLASS,
    "val_confusion",
    "lr",
    "seconds",
]
TEXT = {"val_confusion"}


def read(path: Path) -> list[dict]:
    """The rows of a history.csv (none if it does not exist): numbers as float, `epoch` as int."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return []
    out = []
    for row in rows:
        values = {k: (v if k in TEXT else float(v)) for k, v in row.items() if k is not None and v not in ("", None)}
        values["epoch"] = int(values["epoch"])
        out.append(values)
    return out


def confusion(text: str) -> list[list[int]]:
    """`val_confusion` back to a matrix."""
    return [[int(n) for n in row.split()] for row in text.split("/")]
