"""The split-file contract: `patientid filename label source`, one image per line.

`filename` is relative to its source's root folder, listed in split.json under `roots`.
Published COVIDx files (`patientid filename label [source]`) are read too. File names may
contain spaces (later ieee8023 layouts do), so a line is split from both ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpml.config import CLASSES
from hpml.records import write_text_atomic
from preprocess.csvio import SourceError

_LABEL_ALIASES = {c.lower(): c for c in CLASSES} | {"covid19": "COVID-19", "positive": "COVID-19"}


@dataclass(frozen=True, order=True)
class SplitLine:
    patient: str
    filename: str
    label: str
    source: str


def parse_line(text: str, where: str, default_source: str = "") -> SplitLine:
    parts = text.split()
    if len(parts) < 3:
        raise SourceError(f"{where}: expected 'patientid filename label [source]', got {text!r}")
    patient, rest = text.strip().split(None, 1)
    # The label is the last or the second-to-last token; what precedes it is the file name.
    head, _, last = rest.rpartition(" ")
    if last.lower() in _LABEL_ALIASES:
        filename, label, source = head, last, default_source
    else:
        filename, _, label = head.rpartition(" ")
        source = last
    label = _LABEL_ALIASES.get(label.lower())
    if label is None or not filename:
        raise SourceError(f"{where}: no valid label ({', '.join(CLASSES)}) in {text!r}")
    return SplitLine(patient, filename.strip(), label, source)


def read_split(path: Path, default_source: str = "") -> list[SplitLine]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None
    return [
        parse_line(line, f"{path}:{n}", default_source) for n, line in enumerate(text.splitlines(), 1) if line.strip()
    ]


def write_split(path: Path, lines: list[SplitLine]) -> None:
    body = "".join(f"{x.patient} {x.filename} {x.label} {x.source}\n" for x in lines)
    write_text_atomic(path, body)


def load_roots(split_dir: Path) -> dict[str, Path]:
    """Source name -> root folder, from split.json (relative roots are relative to it)."""
    meta = Path(split_dir) / "split.json"
    try:
        roots = json.loads(meta.read_text(encoding="utf-8"))["roots"]
    except FileNotFoundError:
        raise SourceError(f"{meta}: not found (build the split with `hpml covidx build`)") from None
    except (ValueError, KeyError) as exc:
        raise SourceError(f"{meta}: malformed ({exc})") from None
    return {name: (meta.parent / root).resolve() for name, root in roots.items()}
