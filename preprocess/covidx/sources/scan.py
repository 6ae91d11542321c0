"""What reading a source yields: every row becomes an `Entry` (usable) or a `Skip` (with its
reason); nothing vanishes silently. Which rows count, and as what, is decided in
preprocess.covidx.labels only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from preprocess.covidx.sources.csvio import Table


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


def count(scan: SourceScan, quirk: str) -> None:
    scan.notes[quirk] = scan.notes.get(quirk, 0) + 1
