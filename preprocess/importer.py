"""`hpml covidx import`: use published train/test_COVIDx*.txt files instead of building.

Every published version is read (preprocess.splitfile): 3 or 4 columns, SIRM ids with a space,
binary positive/negative files with `binary=True`. Duplicate lines are dropped (the published
train files repeat RSNA lines, COVID-Net issue 25), every image is checked to exist before
anything is written (missing ones are left out and summarised by reason), and val is carved
from train by patient.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hpml.config import CLASSES
from preprocess import skips as skiplog
from preprocess.csvio import SourceError
from preprocess.split import SPLITS, patient_key, split_patients
from preprocess.splitfile import SplitLine, read_split, write_split, write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Missing:
    where: str
    reason: str


def _present(lines: list[SplitLine], folder: Path, what: str) -> tuple[list[SplitLine], list[Missing]]:
    kept, missing = [], []
    for x in lines:
        path = folder / x.filename
        if path.is_file():
            kept.append(x)
        elif path.exists():
            missing.append(Missing(str(path), "not a file"))
        else:
            missing.append(Missing(str(path), f"file not found (in --{what}-images)"))
    return kept, missing


def import_published(
    train_file: Path, test_file: Path, train_images: Path, test_images: Path, out: Path,
    options=None, binary: bool = False,
) -> dict:  # fmt: skip
    from preprocess.covidx import BuildOptions

    options = options or BuildOptions()
    train = read_split(train_file, "covidx-train", binary)
    test = read_split(test_file, "covidx-test", binary)
    for folder, what in ((train_images, "train"), (test_images, "test")):
        if not Path(folder).is_dir():
            raise SourceError(f"{folder}: --{what}-images folder not found")
    # The source column (cohen, rsna, ...) says where COVID-Net took the image from; here the
    # images lie in one folder per split, so the split is the source.
    train = [SplitLine(x.patient, x.filename, x.label, "covidx-train") for x in train]
    test = [SplitLine(x.patient, x.filename, x.label, "covidx-test") for x in test]
    unique_train, unique_test = sorted(set(train)), sorted(set(test))
    unique_train, missing_train = _present(unique_train, Path(train_images), "train")
    unique_test, missing_test = _present(unique_test, Path(test_images), "test")
    missing = missing_train + missing_test
    if missing:
        skiplog.log_summary(missing, "listed image(s)")
    for kept, listed in ((unique_train, train_file), (unique_test, test_file)):
        if not kept:
            raise SourceError(f"{listed}: none of its images were found ({skiplog.counts(missing)})")
    assignment, conflicts = split_patients(unique_train, options.seed, options.val_fraction, 0.0)
    lines = {
        "train": [x for x in unique_train if assignment[patient_key(x)] == "train"],
        "val": [x for x in unique_train if assignment[patient_key(x)] == "val"],
        "test": unique_test,
    }
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split(out / f"{split}.txt", lines[split])
    meta = {
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "imported_from": [str(train_file), str(test_file)],
        "binary": binary,
        "roots": {"covidx-train": str(Path(train_images).resolve()), "covidx-test": str(Path(test_images).resolve())},
        "counts": {s: {c: sum(x.label == c for x in ls) for c in CLASSES} for s, ls in lines.items()},
        "patients": {s: len({x.patient for x in ls}) for s, ls in lines.items()},
        "images": {s: len(ls) for s, ls in lines.items()},
        "duplicate_lines_dropped": {"train": len(train) - len(set(train)), "test": len(test) - len(set(test))},
        "missing_images": skiplog.summary(missing),
        "skipped": [vars(m) for m in missing],
        "conflicting_label_patients": [f"{src}:{pid}" for src, pid in conflicts],
    }
    write_text_atomic(out / "split.json", json.dumps(meta, indent=1) + "\n")
    return meta
