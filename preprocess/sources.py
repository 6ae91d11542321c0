"""The five public COVIDx sources, each read in its original layout.

A source folder is recognised by its files, never by its name, so renamed clones work:
  ieee8023     metadata.csv with a `filename` column        + images/<filename>
  actualmed    metadata.csv with an `imagename` column       + images/<imagename>
  figure1      metadata.csv with neither                     + images/<patientid>.jpg|.png
  rsna         stage_2_train_labels.csv + stage_2_detailed_class_info.csv
               + stage_2_train_images/<patientId>.dcm
  sirm         COVID.metadata.xlsx (COVID-19 Radiography Database) + COVID/ (preprocess.sirm)
Every row becomes an `Entry` (usable) or a `Skip` (with its reason); nothing vanishes silently.
Which rows count, and as what, is decided in preprocess.labels only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from preprocess import labels
from preprocess.csvio import SourceError, Table, read_table


@dataclass(frozen=True)
class Entry:
    source: str  # source name (the folder's name)
    patient: str
    filename: str  # relative to the source root
    label: str


@dataclass(frozen=True)
class Skip:
    source: str
    where: str  # file:line
    reason: str
    filename: str = ""


@dataclass
class SourceScan:
    name: str
    root: Path
    layout: str
    tables: list[Table]
    entries: list[Entry] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)  # quirks met, counted
    urls: dict[str, str] = field(default_factory=dict)  # entry filename -> URL (SIRM)
    frontal_urls: set[str] = field(default_factory=set)  # ieee8023 rows past the view filter
    first_lines: dict[str, str] = field(default_factory=dict)  # entry filename -> file:line


def detect_layout(root: Path) -> str:
    if (root / "stage_2_train_labels.csv").is_file():
        return "rsna"
    if any(root.glob("*.metadata.xlsx")):
        return "sirm"
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise SourceError(
            f"{root}: matches no known source layout (expected metadata.csv, COVID.metadata.xlsx, "
            "or the RSNA stage_2_train_labels.csv + stage_2_detailed_class_info.csv)"
        )
    with meta.open("rb") as fh:
        head = fh.readline().decode("utf-8-sig", "replace").lower()
    columns = {c.strip() for c in head.split(",")}
    if "filename" in columns:
        return "ieee8023"
    if "imagename" in columns:
        return "actualmed"
    return "figure1"


def scan_source(root: Path, policy: str = labels.DEFAULT_POLICY) -> SourceScan:
    root = Path(root)
    labels.check_policy(policy)
    if not root.is_dir():
        raise SourceError(f"{root}: source folder not found")
    layout = detect_layout(root)
    if layout == "rsna":
        return _scan_rsna(root, layout)
    if layout == "sirm":
        from preprocess.sirm import scan_sirm

        return scan_sirm(root, policy)
    return _scan_metadata(root, layout, policy)


_FIGURE1_LETTERED = re.compile(r"^(.*\d)[a-z]$")  # COVID-00039a/b/c: three films of COVID-00039


def _scan_metadata(root: Path, layout: str, policy: str) -> SourceScan:
    column = {"ieee8023": "filename", "actualmed": "imagename", "figure1": None}[layout]
    required = ("patientid", "finding", "view") + ((column,) if column else ())
    table = read_table(root / "metadata.csv", required)
    scan = SourceScan(root.name, root, layout, [table])
    for raw in _raw_header(table):
        if raw and raw != raw.strip().lower():
            scan.notes[f"column {raw!r} read as {raw.strip().lower()!r}"] = 1
    rule = labels.ieee8023 if layout == "ieee8023" else labels.first_comma
    for line, row in table.rows:
        where = f"{table.path}:{line}"
        pid = row["patientid"]
        name = row[column] if column else _figure1_file(root, pid)
        verdict = rule(policy, row["finding"], row["view"], row.get("modality", ""))
        if layout == "ieee8023" and row["view"] in labels.COVIDNET_VIEWS:  # the notebook's URL pool
            scan.frontal_urls.add(row.get("url", ""))
        problem = "no patient id" if not pid else verdict.reason or ("" if name else "no image file name")
        if problem:
            scan.skips.append(Skip(scan.name, where, problem, name or ""))
            continue
        if layout == "figure1" and (m := _FIGURE1_LETTERED.match(pid)):
            count(scan, "Figure1 lettered ids read as one patient (COVID-00039a -> COVID-00039)")
            pid = m.group(1)
        if not row["view"]:
            count(scan, "rows with a blank view (kept: a blank view is not a lateral film)")
        assert verdict.label is not None
        entry = Entry(scan.name, pid, f"images/{name}", verdict.label)
        scan.entries.append(entry)
        scan.first_lines[entry.filename] = where
    scan.frontal_urls.discard("")
    return scan


def count(scan: SourceScan, quirk: str) -> None:
    scan.notes[quirk] = scan.notes.get(quirk, 0) + 1


def _raw_header(table: Table) -> list[str]:
    with table.path.open("rb") as fh:
        return fh.readline().decode(table.encoding, "replace").rstrip("\r\n").split(",")


def _figure1_file(root: Path, pid: str) -> str | None:
    for ext in (".jpg", ".png"):
        if (root / "images" / f"{pid}{ext}").is_file():
            return f"{pid}{ext}"
    return f"{pid}.jpg" if pid else None  # reported as missing by the existence check


def _scan_rsna(root: Path, layout: str) -> SourceScan:
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
        name = f"stage_2_train_images/{pid}.dcm"
        verdict = labels.rsna(classes.get(pid, set()), targets[pid])
        if verdict.label is None:
            scan.skips.append(Skip(scan.name, where, verdict.reason, name))
        else:
            scan.entries.append(Entry(scan.name, pid, name, verdict.label))
            scan.first_lines[name] = where
    return scan
