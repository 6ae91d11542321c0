"""The fifth COVIDx source: SIRM images of the COVID-19 Radiography Database (Kaggle).

Layout (as create_COVIDx.ipynb reads it): `COVID.metadata.xlsx` with the columns FILE NAME,
FORMAT, SIZE, URL, and the images in `COVID/`. FILE NAME is "COVID 70" while the file is
`COVID/COVID (70).png` in the versions COVID-Net used, so the image is `<FILE NAME>.<format>`
when that exists, else `COVID (<n>).png` (the notebook's fallback). Every row is COVID-19.
Rows whose URL is also in ieee8023 are dropped once all sources are scanned
(`drop_ieee_overlaps`), and the discard list is the label policy's (preprocess.covidx.labels).
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path

from hpml.core.errors import SourceError
from preprocess.covidx import labels
from preprocess.covidx.sources.csvio import Table
from preprocess.covidx.sources.scan import Entry, Skip, SourceScan

COLUMNS = ("file name", "format", "url")


def read_xlsx(path: Path) -> Table:
    """The metadata sheet as a Table (columns normalised, rows numbered as in the sheet)."""
    import pandas as pd

    try:
        raw = path.read_bytes()
        frame = pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
    except ImportError as exc:
        raise SourceError(f"{path}: reading .xlsx needs openpyxl ({exc}); pip install openpyxl") from None
    except Exception as exc:  # openpyxl/zipfile raise many types for a damaged workbook
        raise SourceError(f"{path}: cannot read the spreadsheet: {exc}") from None
    columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise SourceError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {list(frame.columns)!r}")
    rows = []
    for i, values in enumerate(frame.itertuples(index=False), start=2):  # row 1 is the header
        cells = {col: str(v).strip() for col, v in zip(columns, values, strict=True)}
        if any(cells.values()):
            rows.append((i, cells))
    return Table(path, columns, rows, hashlib.sha256(raw).hexdigest(), "xlsx")


def scan_sirm(root: Path, policy: str) -> SourceScan:
    sheets = sorted(root.glob("*.metadata.xlsx"))
    if len(sheets) > 1:
        raise SourceError(f"{root}: more than one *.metadata.xlsx ({', '.join(p.name for p in sheets)})")
    table = read_xlsx(sheets[0])
    folder = sheets[0].name[: -len(".metadata.xlsx")]  # COVID.metadata.xlsx -> COVID/
    scan = SourceScan(root.name, root, "sirm", [table])
    if not (root / folder).is_dir():
        scan.notes[f"{folder}/ absent: metadata only, every image missing"] = 1
    for line, row in table.rows:
        where = f"{table.path}:{line}"
        name = row["file name"]
        if not name:
            scan.skips.append(Skip(scan.name, where, "no FILE NAME"))
            continue
        filename = posixpath.join(folder, _image_name(root / folder, name, row["format"]))  # "/x" stays absolute
        if labels.sirm_discarded(policy, name):
            scan.skips.append(Skip(scan.name, where, f"on COVID-Net's SIRM discard list ({name!r})", filename))
            continue
        entry = Entry(scan.name, name, filename, "COVID-19")
        scan.entries.append(entry)
        scan.urls[filename] = row["url"]
        scan.first_lines[filename] = where
    return scan


def _image_name(folder: Path, name: str, fmt: str) -> str:
    first = f"{name}.{fmt.lower()}"
    if (folder / first).is_file() or "COVID " not in name:
        return first
    return f"COVID ({name.split('COVID ', 1)[1]}).png"


def drop_ieee_overlaps(scans: list[SourceScan]) -> None:
    """Move SIRM entries whose URL an ieee8023 source also has to the skips (needs both scanned)."""
    ieee_urls = set().union(*(s.frontal_urls for s in scans if s.layout == "ieee8023"))
    for scan in scans:
        if scan.layout != "sirm" or not ieee_urls:
            continue
        kept = []
        for e in scan.entries:
            if scan.urls.get(e.filename) in ieee_urls:
                why = f"URL also in ieee8023 ({scan.urls[e.filename]})"
                scan.skips.append(Skip(scan.name, scan.first_lines[e.filename], why, e.filename))
            else:
                kept.append(e)
        scan.entries = kept
