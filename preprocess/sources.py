"""The four public COVIDx sources, each read in its original layout.

A source folder is recognised by its files, never by its name, so renamed clones work:
  ieee8023     metadata.csv with a `filename` column        + images/<filename>
  actualmed    metadata.csv with an `imagename` column       + images/<imagename>
  figure1      metadata.csv with neither                     + images/<patientid>.jpg|.png
  rsna         stage_2_train_labels.csv + stage_2_detailed_class_info.csv
               + stage_2_train_images/<patientId>.dcm
Every row becomes an `Entry` (usable) or a `Skip` (with its reason); nothing vanishes silently.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from preprocess.csvio import SourceError, Table, read_table
from preprocess.labels import is_frontal, map_finding


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


def detect_layout(root: Path) -> str:
    if (root / "stage_2_train_labels.csv").is_file():
        return "rsna"
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise SourceError(
            f"{root}: matches no known source layout (expected metadata.csv, or the RSNA "
            "stage_2_train_labels.csv + stage_2_detailed_class_info.csv)"
        )
    with meta.open("rb") as fh:
        head = fh.readline().decode("utf-8-sig", "replace").lower()
    columns = {c.strip() for c in head.split(",")}
    if "filename" in columns:
        return "ieee8023"
    if "imagename" in columns:
        return "actualmed"
    return "figure1"


def scan_source(root: Path) -> SourceScan:
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: source folder not found")
    layout = detect_layout(root)
    return _scan_rsna(root, layout) if layout == "rsna" else _scan_metadata(root, layout)


def _scan_metadata(root: Path, layout: str) -> SourceScan:
    column = {"ieee8023": "filename", "actualmed": "imagename", "figure1": None}[layout]
    required = ("patientid", "finding", "view") + ((column,) if column else ())
    table = read_table(root / "metadata.csv", required)
    scan = SourceScan(root.name, root, layout, [table])
    for raw in _raw_header(table):
        if raw and raw != raw.strip().lower():
            scan.notes[f"column {raw!r} read as {raw.strip().lower()!r}"] = 1
    has_modality = "modality" in table.columns
    for line, row in table.rows:
        where = f"{table.path}:{line}"
        pid = row["patientid"]
        name = row[column] if column else _figure1_file(root, pid)
        skip = _row_problem(row, has_modality, pid, name)
        if skip:
            scan.skips.append(Skip(scan.name, where, skip, name or ""))
            continue
        label = map_finding(row["finding"])
        scan.entries.append(Entry(scan.name, pid, f"images/{name}", label))
    return scan


def _raw_header(table: Table) -> list[str]:
    with table.path.open("rb") as fh:
        return fh.readline().decode(table.encoding, "replace").rstrip("\r\n").split(",")


def _row_problem(row: dict[str, str], has_modality: bool, pid: str, name: str | None) -> str:
    if not pid:
        return "no patient id"
    if has_modality and row["modality"] and row["modality"].strip().lower() != "x-ray":
        return f"not an X-ray (modality {row['modality']!r})"
    if not is_frontal(row["view"]):
        return f"not a frontal view ({row['view']!r})"
    if map_finding(row["finding"]) is None:
        finding = row["finding"]
        return f"unknown finding {finding!r}" if finding else "no finding given (unconfirmed)"
    if not name:
        return "no image file name"
    return ""


def _figure1_file(root: Path, pid: str) -> str | None:
    for ext in (".jpg", ".png"):
        if (root / "images" / f"{pid}{ext}").is_file():
            return f"{pid}{ext}"
    return f"{pid}.jpg" if pid else None  # reported as missing by the existence check


_RSNA_CLASS = {"normal": "normal", "lung opacity": "pneumonia"}
_RSNA_LEFT_OUT = "no lung opacity / not normal"


def _scan_rsna(root: Path, layout: str) -> SourceScan:
    labels = read_table(root / "stage_2_train_labels.csv", ("patientid", "target"))
    info_path = root / "stage_2_detailed_class_info.csv"
    if not info_path.is_file():
        raise SourceError(f"{info_path}: missing (the RSNA source needs both label files)")
    info = read_table(info_path, ("patientid", "class"))
    scan = SourceScan(root.name, root, layout, [labels, info])
    classes: dict[str, set[str]] = defaultdict(set)
    for _, row in info.rows:
        classes[row["patientid"]].add(row["class"].strip().lower())
    targets: dict[str, set[str]] = defaultdict(set)
    first_line: dict[str, int] = {}
    box_rows = 0
    for line, row in labels.rows:
        pid = row["patientid"]
        box_rows += pid in first_line
        first_line.setdefault(pid, line)
        targets[pid].add(row["target"].strip())
    scan.notes["RSNA box rows collapsed (one image per patient)"] = box_rows
    if not (root / "stage_2_train_images").is_dir():
        scan.notes["stage_2_train_images/ absent: labels only, every image missing"] = 1
    for pid, line in first_line.items():  # file order: deterministic
        where = f"{labels.path}:{line}"
        name = f"stage_2_train_images/{pid}.dcm"
        kinds = classes.get(pid)
        if not kinds:
            scan.skips.append(Skip(scan.name, where, "no class in detailed_class_info", name))
        elif len(kinds) > 1 or len(targets[pid]) > 1:
            scan.skips.append(Skip(scan.name, where, f"conflicting RSNA classes {sorted(kinds)}", name))
        elif _RSNA_LEFT_OUT in kinds:
            scan.skips.append(Skip(scan.name, where, "RSNA 'No Lung Opacity / Not Normal' (left out)", name))
        elif (kind := next(iter(kinds))) not in _RSNA_CLASS:
            scan.skips.append(Skip(scan.name, where, f"unknown RSNA class {kind!r}", name))
        elif (targets[pid] == {"1"}) != (kind == "lung opacity"):
            scan.skips.append(Skip(scan.name, where, f"Target {targets[pid]} disagrees with class {kind!r}", name))
        else:
            scan.entries.append(Entry(scan.name, pid, name, _RSNA_CLASS[kind]))
    return scan
