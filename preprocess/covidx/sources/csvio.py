"""Reading the sources' CSV files robustly.

Upstream metadata changed shape many times (COVID-Net issues 95, 122, 148, 173): `Patientid`
vs `patientid`, `" url"` with a leading space, trailing empty columns, CRLF, Latin-1 bytes.
Column names are normalised (stripped, lower-cased) and rows come back with line numbers.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from hpml.core.errors import SourceError


@dataclass(frozen=True)
class Table:
    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (line number in the file, row)
    sha256: str
    encoding: str


def _decode(raw: bytes, path: Path) -> tuple[str, str]:
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise SourceError(f"{path}: cannot decode text")  # latin-1 decodes anything; unreachable


def read_table(path: Path, required: tuple[str, ...]) -> Table:
    """Read a CSV whose header must contain `required` (after normalisation)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    text, encoding = _decode(raw, path)
    if not text.strip():
        raise SourceError(f"{path}: empty file (no header line)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise SourceError(f"{path}:1: malformed CSV header: {exc}") from None
    columns = [c.strip().lower() for c in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise SourceError(f"{path}:1: missing column(s) {', '.join(missing)}; header is {header!r}")
    rows = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns) and any(c.strip() for c in row[len(columns) :]):
                raise SourceError(f"{path}:{reader.line_num}: {len(row)} fields, header has {len(columns)}")
            cells = {col: (row[i].strip() if i < len(row) else "") for i, col in enumerate(columns)}
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise SourceError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    return Table(path, columns, rows, hashlib.sha256(raw).hexdigest(), encoding)
