"""The RSNA Pneumonia Detection Challenge source: two label tables, one DICOM per patientId.

`stage_2_train_labels.csv` has one row PER BOUNDING BOX (patientId, x, y, width, height,
Target); `stage_2_detailed_class_info.csv` gives the class (Normal, Lung Opacity, No Lung
Opacity / Not Normal). The images are `stage_2_train_images/<patientId>.dcm`.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from pathlib import Path

from hpml.core.errors import SourceError
from preprocess.covidx import labels
from preprocess.covidx.sources.csvio import read_table
from preprocess.covidx.sources.scan import Entry, Skip, SourceScan


def scan_rsna(root: Path, layout: str) -> SourceScan:
    """RSNA ids are image ids (one radiograph per patientId), so a patient here is one image."""
    labels_table = read_table(root / "stage_2_train_labels.csv", ("patientid", "target"))
    info_path = root / "stage_2_detailed_class_info.csv"
    if not info_path.is_file():
        raise SourceError(f"{info_path}: missing (the RSNA source needs both label files)")
    info = read_table(info_path, ("patientid", "class"))
    scan = SourceScan(root.name, root, layout, [labels_table, info])
    classes: dict[str, set[str]] = defaultdict(set)
    for _, row in info.rows:
        classes[row["patientid"]].add(row["class"])
    targets: dict[str, set[str]] = defaultdict(set)
    first_line: dict[str, int] = {}
    box_rows = 0
    for line, row in labels_table.rows:
        pid = row["patientid"]
        box_rows += pid in first_line
        first_line.setdefault(pid, line)
        targets[pid].add(row["target"])
    scan.notes["RSNA box rows collapsed (one image per patient)"] = box_rows
    disagree = sum(
        ("Normal" in classes[p] and "1" in targets[p]) or ("Lung Opacity" in classes[p] and "1" not in targets[p])
        for p in first_line
    )
    if disagree:
        scan.notes["RSNA patients whose class and Target disagree (Normal wins, as in COVID-Net)"] = disagree
    if not (root / "stage_2_train_images").is_dir():
        scan.notes["stage_2_train_images/ absent: labels only, every image missing"] = 1
    for pid, line in first_line.items():  # file order: deterministic
        where = f"{labels_table.path}:{line}"
        name = posixpath.join("stage_2_train_images", f"{pid}.dcm")  # "/x" stays absolute
        verdict = labels.rsna(classes.get(pid, set()), targets[pid])
        if verdict.label is None:
            scan.skips.append(Skip(scan.name, where, verdict.reason, name))
        else:
            scan.entries.append(Entry(scan.name, pid, name, verdict.label))
            scan.first_lines[name] = where
    return scan
