"""Containment: every data path a table names is a regular file inside its source root.

A file name from a metadata table or a published list is refused (a counted skip, never fatal) when:

  control character in file name    a newline, tab, ... cannot be written into a split file
  absolute file name                 `/etc/x.png`
  '..' in file name                  `../outside.png`: names in tables never climb
  link outside the source root       resolved (symlinks followed), it lies outside the root;
                                     accepted with `allow_outside_root` (--follow-outside-links)
  not a regular file                 a FIFO, device, socket or directory: never opened

A name that does not exist is left to the image check ("file not found"). Symlinks that stay
inside the root are followed. The root itself may be a symlink: it is resolved first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from hpml.core.errors import SourceError
from hpml.imaging.limits import file_kind
from preprocess.covidx.sources.scan import Skip, SourceScan
from preprocess.splitfile import control_char

LINK_HINT = "--follow-outside-links accepts it"


def refusal(root: Path, filename: str, allow_outside_root: bool = False) -> str | None:
    """Why `root / filename` may not be used as an image (a skip reason), or None."""
    if (c := control_char(filename)) is not None:
        return f"control character in file name ({c!r} in {filename!r})"
    name = PurePosixPath(filename)
    if name.is_absolute() or Path(filename).is_absolute():
        return f"absolute file name ({filename})"
    if ".." in name.parts:
        return f"'..' in file name ({filename})"
    path = Path(root) / filename
    try:
        real = path.resolve()
        inside = real.is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        return f"link outside the source root ({filename}: cannot resolve: {exc})"
    if not inside and not allow_outside_root:
        return f"link outside the source root ({filename} -> {real}; {LINK_HINT})"
    try:
        mode = os.stat(path).st_mode  # follows links; never opens the file
    except OSError:
        return None  # missing or unreadable: the image check reports it by name
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({file_kind(mode)}: {filename})"


def contain(scans: list[SourceScan], allow_outside_root: bool = False) -> None:
    """Move every entry whose file or patient id may not be used to its scan's skips."""
    for scan in scans:
        if (c := control_char(scan.name)) is not None:
            raise SourceError(f"{scan.root}: control character {c!r} in the source folder's name; rename it")
        kept = []
        for e in scan.entries:
            why = refusal(scan.root, e.filename, allow_outside_root)
            if why is None and (c := control_char(e.patient)) is not None:
                why = f"control character in patient id ({c!r} in {e.patient!r})"
            if why is None:
                kept.append(e)
            else:
                where = scan.first_lines.get(e.filename, str(scan.root))
                scan.skips.append(Skip(scan.name, where, why, e.filename))
        scan.entries = kept
