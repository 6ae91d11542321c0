"""Hostile input: every limit of hpml.imaging, checked from the file's own header before decoding.

See hpml.imaging for the limits and their environment variables. Only regular files are read
(`read_bytes`): a FIFO, device or directory is refused without waiting on it.
"""

from __future__ import annotations

import os
import stat
import struct

from hpml.core.errors import UsageError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 50_000_000  # see the module docstring: real CXRs reach ~4,000 x 5,000 (20 Mpx)
MAX_DECODED_BYTES = 256 << 20
MAX_FILE_BYTES = 512 << 20


class ImageError(Exception):
    """A file that is not a usable image; the message says why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def limit(name: str) -> int:
    """MAX_PIXELS, MAX_DECODED_BYTES or MAX_FILE_BYTES: $HPML_<name> when set, else the constant."""
    raw = os.environ.get(f"HPML_{name}", "").strip()
    if not raw:
        return globals()[name]
    try:
        value = int(float(raw.replace("_", "")))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise UsageError(f"HPML_{name}={raw!r}: expected a positive whole number (default {globals()[name]:,})")
    return value


def check_size(path, what: str, rows: int, cols: int, samples: int = 1, depth: int = 1, frames: int = 1) -> None:
    """Refuse, from a header and before decoding, an image over HPML_MAX_PIXELS / _DECODED_BYTES."""
    claim = f"{what} header claims {cols} x {rows} pixels (width x height)"
    if rows < 1 or cols < 1:
        raise ImageError(path, f"{claim}: an empty image")
    if rows * cols > (cap := limit("MAX_PIXELS")):
        raise ImageError(path, f"{claim} = {rows * cols:,}, over the limit of {cap:,} pixels (HPML_MAX_PIXELS)")
    nbytes, cap = rows * cols * samples * depth * frames, limit("MAX_DECODED_BYTES")
    if nbytes > cap:
        every = f" x {frames} frames (all inflated)" if frames > 1 else ""
        claim += f" x {samples} samples x {depth} bytes{every} = {nbytes:,} bytes decoded"
        raise ImageError(path, f"{claim}, over the limit of {cap:,} bytes (HPML_MAX_DECODED_BYTES)")


def png_header(data: bytes, path) -> tuple[int, int, int, int]:
    """(rows, columns, samples, bytes per sample) from IHDR, which the PNG format puts first."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        raise ImageError(path, "corrupt image: PNG without an IHDR header")
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    samples = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color)  # palette decodes to 3 channels
    if samples is None:
        raise ImageError(path, f"corrupt image: PNG with an invalid colour type {color}")
    return height, width, samples, 2 if depth == 16 else 1


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}  # every frame header (0xF7: JPEG-LS)


def jpeg_header(data: bytes, path, what: str = "JPEG") -> tuple[int, int, int, int]:
    """(rows, columns, components, bytes per sample) from the first frame header (SOF marker)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker too
            if (i := data.find(b"\xff", i)) < 0:
                break
            continue
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte, no-length markers
            i += 1 if marker == 0xFF else 2
        elif marker in (0xD9, 0xDA):  # end of image or image data before any frame header
            break
        elif marker in _SOF and i + 10 <= len(data):
            precision, height, width, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
            if height == 0:
                raise ImageError(path, f"{what} frame header without a height (DNL marker, unsupported)")
            return height, width, components, 2 if precision > 8 else 1
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    raise ImageError(path, f"corrupt image: {what} without a frame header (SOF marker) before its image data")


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is: `a FIFO (named pipe)`, `a directory`, ..."""
    return next((kind for test, kind in _KINDS if test(mode)), "of an unknown kind")


def check_regular(path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, f"not a regular file: {file_kind(st.st_mode)}")
    if st.st_size > (cap := limit("MAX_FILE_BYTES")):
        raise ImageError(path, f"file is {st.st_size:,} bytes, over the limit of {cap:,} (HPML_MAX_FILE_BYTES)")


def read_bytes(path: str | os.PathLike) -> bytes:
    """A regular file's bytes, at most HPML_MAX_FILE_BYTES; a FIFO or device is never waited on."""
    for name in ("MAX_PIXELS", "MAX_DECODED_BYTES"):  # a bad setting fails the job here, not every file
        limit(name)
    try:
        check_regular(path, os.stat(path))  # before open: opening some devices acts on them
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            check_regular(path, st := os.fstat(fd))  # the same file that was checked
            data = os.read(fd, st.st_size + 1)  # one read for a regular file; the +1 sees growth
            while len(data) <= st.st_size and (more := os.read(fd, st.st_size + 1 - len(data))):
                data += more
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > st.st_size:
        raise ImageError(path, f"file grew while it was read ({st.st_size:,} bytes when opened)")
    return data
