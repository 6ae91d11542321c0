"""Which epoch is the best: the rule shared by training, `--checkpoint best` and the sweep report.

`train.monitor` names the history column that decides: val_loss (lower is better), or
val_accuracy, val_macro_f1, val_covid_sensitivity (higher is better). The best epoch is strictly
the best value so far; a tie keeps the earlier epoch. Training writes that epoch's weights to
best.h5 (hpml.train.selection) and `hpml sweep report` reads history.csv with the same rule, so
the two always name the same epoch.
"""

from __future__ import annotations

from hpml.core.config import CLASSES

# monitor -> (history.csv column, higher is better); loss and accuracy (training) for reports only
MONITORS: dict[str, tuple[str, bool]] = {
    "val_loss": ("val_loss", False),
    "val_accuracy": ("val_accuracy", True),
    "val_macro_f1": ("val_macro_f1", True),
    "val_covid_sensitivity": (f"val_sensitivity_{CLASSES[-1]}", True),
}
REPORTABLE: dict[str, tuple[str, bool]] = {**MONITORS, "loss": ("loss", False), "accuracy": ("accuracy", True)}


def column(monitor: str) -> str:
    """The history.csv column a monitor reads."""
    return REPORTABLE[monitor][0]


def score(monitor: str, row: dict) -> float:
    """The row's monitored value as a loss: lower is better, whatever the monitor."""
    name, higher = REPORTABLE[monitor]
    value = float(row[name])
    return -value if higher else value


def best_row(monitor: str, rows: list[dict]) -> dict | None:
    """The strictly best row (the first of equals), skipping rows without the value."""
    name = column(monitor)
    best = None
    for row in rows:
        if row.get(name) in ("", None):
            continue
        if best is None or score(monitor, row) < score(monitor, best):
            best = row
    return best
