"""The split-file contract: `patientid filename label source`, one image per line.

`filename` is relative to its source's root folder, listed in split.json under `roots`.
Fields are separated by single spaces (COVID-Net's format, which its readers split with
`str.split()`), or by tabs when a field itself holds a space (SIRM "COVID 70", file names
with spaces), so our own files are never ambiguous.

Every published COVIDx label-file version is read too: `patientid filename label` (COVIDx 2-6
RSNA lines) or `patientid filename label source` (later versions), SIRM patient ids with a
space (`COVID 70 COVID(70).png COVID-19 sirm`, COVIDx 7A-8B), and with `binary=True` the
COVID-19-vs-rest files (`positive` / `negative`, COVIDx 8B, 9B, CXR-2). Published file names
hold no spaces, so a space-separated line is split from both ends: label (3rd or 4th column
from the start, last or second-to-last from the end), then the file name is the token before
it and the patient id is everything before that.

No field may hold a control character (newline, tab, ...) or a Unicode line separator: such a
line could not be read back, so `write_split` refuses it (ValueError) and `read_split` names the
file and line where one is found. A file name is a relative path without `..` (`covidx build`
and `import` skip other rows, preprocess.covidx.containment).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hpml.core.config import CLASSES
from hpml.core.errors import SourceError
from hpml.core.files import write_text_atomic

LABELS = {c.lower(): c for c in CLASSES}
# Binary COVIDx files: positive = COVID-19, negative = anything else. Imported only on request,
# into the class `normal` (read: "not COVID-19"); the pneumonia class then stays empty.
BINARY_LABELS = {"positive": "COVID-19", "negative": "normal"}
_NEWLINE = re.compile(r"\r\n|\r|\n")  # line ends as editors count them (str.splitlines knows 8 more)


@dataclass(frozen=True, order=True)
class SplitLine:
    patient: str
    filename: str
    label: str
    source: str


def control_char(text: str) -> str | None:
    """The first character of `text` that no split-file field may hold, or None.

    Control characters (Cc: newline, tab, NUL, ...) and line/paragraph separators (Zl, Zp), which
    `str.splitlines` treats as line ends.
    """
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)


def _label(token: str, binary: bool) -> str | None:
    return (BINARY_LABELS if binary else LABELS).get(token.lower())


def parse_line(text: str, where: str, default_source: str = "", binary: bool = False) -> SplitLine:
    """One line of a split file (ours or a published one); SourceError names `where`."""
    if (c := control_char(text.rstrip("\r\n").replace("\t", " "))) is not None:
        raise SourceError(f"{where}: control character {c!r} in the line: {text!r}")
    if "\t" in text:
        fields = [f.strip() for f in text.rstrip("\r\n").split("\t")]
        if len(fields) not in (3, 4) or not all(fields):
            raise SourceError(f"{where}: expected 3 or 4 tab-separated fields, got {text!r}")
        label = _label(fields[2], binary)
        if label is None:
            raise SourceError(f"{where}: unknown label {fields[2]!r} ({_expected(binary)})")
        return SplitLine(fields[0], fields[1], label, fields[3] if len(fields) == 4 else default_source)
    tokens = text.split()
    if len(tokens) < 3:
        raise SourceError(f"{where}: expected 'patientid filename label [source]', got {text!r}")
    if (label := _label(tokens[-1], binary)) is not None:
        middle, source = tokens[:-1], default_source
    elif len(tokens) >= 4 and (label := _label(tokens[-2], binary)) is not None:
        middle, source = tokens[:-2], tokens[-1]
    else:
        seen = tokens[-1] if len(tokens) == 3 else f"{tokens[-2]} / {tokens[-1]}"
        hint = ""
        if not binary and {tokens[-1].lower(), tokens[-2].lower()} & set(BINARY_LABELS):
            hint = "; a binary (positive/negative) COVIDx file: import it with --binary"
        raise SourceError(f"{where}: unknown label {seen!r} ({_expected(binary)}){hint}: {text.strip()!r}")
    if len(middle) < 2:
        raise SourceError(f"{where}: expected 'patientid filename label [source]', got {text!r}")
    return SplitLine(" ".join(middle[:-1]), middle[-1], label, source)


def _expected(binary: bool) -> str:
    return "expected " + (" or ".join(BINARY_LABELS) if binary else ", ".join(CLASSES))


def read_split(path: Path, default_source: str = "", binary: bool = False) -> list[SplitLine]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None
    return [
        parse_line(line, f"{path}:{n}", default_source, binary)
        for n, line in enumerate(_NEWLINE.split(text), 1)
        if line.strip()
    ]


def write_split(path: Path, lines: list[SplitLine]) -> None:
    """Write the lines atomically; ValueError (nothing written) for a line that could not be read back."""
    body = "".join(format_line(x) for x in lines)
    write_text_atomic(path, body)


def format_line(x: SplitLine) -> str:
    fields = (x.patient, x.filename, x.label, x.source)
    for what, value in zip(("patient id", "file name", "label", "source"), fields, strict=True):
        if (c := control_char(value)) is not None:
            raise ValueError(f"cannot write {what} {value!r} into a split file: control character {c!r}")
    name = PurePosixPath(x.filename)
    if name.is_absolute() or ".." in name.parts:
        raise ValueError(f"cannot write file name {x.filename!r} into a split file: not relative to its source root")
    sep = "\t" if any(c.isspace() for f in fields for c in f) else " "
    return sep.join(fields) + "\n"


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
