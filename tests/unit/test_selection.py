"""Model selection (hpml.core.best_epoch, hpml.train.selection): strictly the best epoch, per-epoch files."""

from __future__ import annotations

from pathlib import Path

from hpml.core.best_epoch import best_row, score
from hpml.train.selection import epoch_file, to_prune


def rows(column: str, values: list) -> list[dict]:
    return [{"epoch": str(e), column: "" if v is None else str(v)} for e, v in enumerate(values)]


def test_the_best_epoch_is_strictly_the_best_and_a_tie_keeps_the_first():
    assert best_row("val_loss", rows("val_loss", [0.9, 0.5, 0.5, 0.6]))["epoch"] == "1"
    # Keras' plateau (min_delta 0.01) would not count 0.895 as better than 0.9; the best epoch does.
    assert best_row("val_loss", rows("val_loss", [0.9, 0.895]))["epoch"] == "1"
    assert best_row("val_macro_f1", rows("val_macro_f1", [0.2, 0.7, 0.7, 0.1]))["epoch"] == "1"
    sens = rows("val_sensitivity_COVID-19", [0.5, None, 1.0])  # an epoch without validation is skipped
    assert best_row("val_covid_sensitivity", sens)["epoch"] == "2"
    assert best_row("val_accuracy", rows("val_accuracy", [None])) is None
    assert score("val_accuracy", {"val_accuracy": "0.75"}) == -0.75  # higher is better: negated


def test_per_epoch_files_are_named_like_the_seeds_and_pruned_to_the_newest(tmp_path: Path):
    row = {"epoch": "2", "val_loss": "0.43214"}
    assert epoch_file(tmp_path, 3, "val_loss", row).name == "epoch-003-val_loss-0.4321.h5"
    assert epoch_file(tmp_path, 3, "val_loss", {"epoch": "2", "val_loss": ""}).name == "epoch-003.h5"
    for name in ("epoch-001-val_loss-0.9000.h5", "epoch-999-val_loss-0.3000.h5", "epoch-002.h5", "notes.h5"):
        (tmp_path / name).touch()
    (tmp_path / "epoch-1000-val_loss-0.2000.h5").touch()  # past 3 digits: newest by epoch, not by name
    assert [p.name for p in to_prune(tmp_path, 3)] == ["epoch-001-val_loss-0.9000.h5"]
    assert [p.name for p in to_prune(tmp_path, 1)] == [
        "epoch-001-val_loss-0.9000.h5",
        "epoch-002.h5",
        "epoch-999-val_loss-0.3000.h5",
    ]
    assert to_prune(tmp_path, "all") == [] and len(to_prune(tmp_path, 0)) == 4
