"""`hpml covidx import`: use published train/test_COVIDx*.txt files instead of building.

Every published version is read (preprocess.splitfile): 3 or 4 columns, SIRM ids with a space,
binary positive/negative files with `binary=True`. Duplicate lines are dropped (the published
train files repeat RSNA lines, COVID-Net issue 25), every image is checked to exist before
anything is written (missing ones are left out and summarised by reason), names that leave their
images folder (`..`, absolute, a symlink out of it) or name no regular file are left out the same
way (preprocess.covidx.containment), and val is carved from train by patient.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hpml.core.config import CLASSES
from hpml.core.errors import SourceError
from hpml.core.files import file_sha256, write_text_atomic
from hpml.core.provenance import upstream
from preprocess.covidx import skips as skiplog
from preprocess.covidx.containment import refusal
from preprocess.covidx.options import BuildOptions
from preprocess.covidx.split import SPLITS, patient_key, split_patients
from preprocess.splitfile import SplitLine, read_split, write_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Missing:
    where: str
    reason: str
    filename: str = ""


def _present(
    lines: list[SplitLine], folder: Path, what: str, allow_outside: bool
) -> tuple[list[SplitLine], list[Missing]]:
    kept, missing = [], []
    for x in lines:
        if why := refusal(folder, x.filename, allow_outside):
            missing.append(Missing(f"{folder}: {x.filename!r}", why, x.filename))
        elif (folder / x.filename).is_file():
            kept.append(x)
        else:
            missing.append(Missing(str(folder / x.filename), f"file not found (in --{what}-images)", x.filename))
    return kept, missing


@dataclass(frozen=True)
class Published:
    """One published split file (train_COVIDx*.txt, test_COVIDx*.txt) and its images' folder."""

    listing: Path
    images: Path


def import_published(
    train_set: Published, test_set: Published, out: Path, options: BuildOptions | None = None, binary: bool = False
) -> dict:
    options = options or BuildOptions()
    train = read_split(train_set.listing, "covidx-train", binary)
    test = read_split(test_set.listing, "covidx-test", binary)
    for folder, what in ((train_set.images, "train"), (test_set.images, "test")):
        if not Path(folder).is_dir():
            raise SourceError(f"{folder}: --{what}-images folder not found")
    # The source column (cohen, rsna, ...) says where COVID-Net took the image from; here the
    # images lie in one folder per split, so the split is the source.
    train = [SplitLine(x.patient, x.filename, x.label, "covidx-train") for x in train]
    test = [SplitLine(x.patient, x.filename, x.label, "covidx-test") for x in test]
    unique_train, unique_test = sorted(set(train)), sorted(set(test))
    outside = options.allow_outside_root
    unique_train, missing_train = _present(unique_train, Path(train_set.images), "train", outside)
    unique_test, missing_test = _present(unique_test, Path(test_set.images), "test", outside)
    missing = missing_train + missing_test
    if missing:
        skiplog.log_summary(missing, "listed image(s)")
    for kept, listed in ((unique_train, train_set.listing), (unique_test, test_set.listing)):
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
        "imported_from": [str(train_set.listing), str(test_set.listing)],
        "binary": binary,
        "roots": {
            "covidx-train": str(Path(train_set.images).resolve()),
            "covidx-test": str(Path(test_set.images).resolve()),
        },
        # The images folder's git commit where it is a clone; the published list read, by its sha256.
        "upstream": {
            name: upstream(Path(given.images), {Path(given.listing).name: file_sha256(given.listing)})
            for name, given in (("covidx-train", train_set), ("covidx-test", test_set))
        },
        "counts": {s: {c: sum(x.label == c for x in ls) for c in CLASSES} for s, ls in lines.items()},
        "patients": {s: len({x.patient for x in ls}) for s, ls in lines.items()},
        "images": {s: len(ls) for s, ls in lines.items()},
        "duplicate_lines_dropped": {"train": len(train) - len(set(train)), "test": len(test) - len(set(test))},
        "allow_outside_root": options.allow_outside_root,
        "missing_images": skiplog.summary(missing),
        "dropped": skiplog.counts(missing),
        "skipped": [vars(m) for m in missing],
        "conflicting_label_patients": [f"{src}:{pid}" for src, pid in conflicts],
    }
    write_text_atomic(out / "split.json", json.dumps(meta, indent=1) + "\n")
    return meta
