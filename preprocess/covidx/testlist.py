"""`covidx build --test-list test_COVIDx*.txt`: pin the test set to a published list.

Published lines name the image as COVID-Net's notebook wrote it into data/test, not as the
source stores it: RSNA `<id>.png` for `stage_2_train_images/<id>.dcm`, SIRM `COVID(70).png`
(spaces removed) for `COVID/COVID (70).png`. So an image is matched on its base name with spaces
removed, else on that name's stem, within the source the line's 4th column names (cohen, fig1,
actmed, sirm, rsna), or in any source for 3-column lines.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hpml.core.errors import SourceError
from preprocess.covidx.sources.scan import Entry
from preprocess.splitfile import SplitLine, read_split

PUBLISHED_SOURCES = {"cohen": "ieee8023", "fig1": "figure1", "actmed": "actualmed", "sirm": "sirm", "rsna": "rsna"}


@dataclass
class Pinning:
    path: str
    listed: int = 0
    pinned: list[int] = field(default_factory=list)  # indices into the entries
    missing: list[str] = field(default_factory=list)  # listed lines with no image here, with why
    label_differs: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)  # unlisted images of pinned patients: unused


def _keys(filename: str) -> tuple[str, str]:
    name = PurePosixPath(filename).name.replace(" ", "")
    return name, PurePosixPath(name).stem


def read_test_list(path: Path) -> tuple[list[SplitLine], bool]:
    """The listed lines, and whether the list is a binary (positive/negative) one."""
    try:
        return read_split(path), False
    except SourceError as three_class:
        try:
            return read_split(path, binary=True), True
        except SourceError:
            raise three_class from None


def pin(path: Path, entries: list[Entry], layouts: dict[str, str]) -> Pinning:
    """Match every listed line to the entries (layouts: source name -> layout)."""
    lines, binary = read_test_list(path)
    index: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        for key in _keys(e.filename):
            index[(layouts[e.source], key)].append(i)
            index[("*", key)].append(i)
    result = Pinning(str(path), listed=len(lines))
    pinned: set[int] = set()
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n} {line.patient} {line.filename}"
        kind = PUBLISHED_SOURCES.get(line.source.lower(), "") if line.source else "*"
        if not kind:
            result.missing.append(f"{where}: source {line.source!r} is not one hpml builds")
            continue
        full, stem = _keys(line.filename)
        found = index.get((kind, full)) or index.get((kind, stem)) or []
        if not found:
            result.missing.append(f"{where}: not among the usable images of the sources")
            continue
        if len(found) > 1:
            result.ambiguous.append(f"{where}: {len(found)} images match")
        for i in found:
            pinned.add(i)
            if not binary and entries[i].label != line.label:
                result.label_differs.append(f"{where}: listed {line.label}, {entries[i].label} here")
    result.pinned = sorted(pinned)
    return result
