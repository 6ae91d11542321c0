"""The three sources with a `metadata.csv`: ieee8023 covid-chestxray-dataset, Actualmed and
Figure1 (COVID-Net's create_COVIDx notebook reads them alike, with per-layout file columns).

ieee8023 names the image in `filename`, Actualmed in `imagename`; Figure1 has no file column:
the image is `images/<patientid>.jpg`, or `.png` where no jpg exists.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from preprocess.covidx import labels
from preprocess.covidx.sources.csvio import Table, read_table
from preprocess.covidx.sources.scan import Entry, Skip, SourceScan, count

_FIGURE1_LETTERED = re.compile(r"^(.*\d)[a-z]$")  # COVID-00039a/b/c: three films of COVID-00039


def scan_metadata(root: Path, layout: str, policy: str) -> SourceScan:
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
        entry = Entry(scan.name, pid, posixpath.join("images", name), verdict.label)  # "/x" stays absolute
        scan.entries.append(entry)
        scan.first_lines[entry.filename] = where
    scan.frontal_urls.discard("")
    return scan


def _raw_header(table: Table) -> list[str]:
    with table.path.open("rb") as fh:
        return fh.readline().decode(table.encoding, "replace").rstrip("\r\n").split(",")


def _figure1_file(root: Path, pid: str) -> str | None:
    for ext in (".jpg", ".png"):
        if (root / "images" / f"{pid}{ext}").is_file():
            return f"{pid}{ext}"
    return f"{pid}.jpg" if pid else None  # reported as missing by the existence check
