"""DICOM -> 8-bit gray: one frame, rescale and VOI window applied, MONOCHROME1 inverted, bounded.

The header (and a compressed first frame's own JPEG / JPEG 2000 header) is checked against
hpml.imaging.limits before PixelData is decoded; a deflated file is inflated only as far as its
header declares.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np

from hpml.core.errors import UsageError
from hpml.imaging.limits import ImageError, check_size, jpeg_header, limit
from hpml.imaging.pixels import to_gray, to_uint8


def _dicom_header(ds, path, every_frame: bool = False) -> int:
    """Check Rows/Columns/... against the limits before PixelData is touched; returns its bytes."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = max(1, int(ds.get("NumberOfFrames") or 1))
        samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 8)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError(path, f"DICOM without usable image dimensions ({exc})") from None
    depth = max(1, (bits + 7) // 8)
    check_size(path, "DICOM", rows, cols, samples, depth, frames if every_frame else 1)
    return rows * cols * frames * samples * depth


def _inflate(raw, path):
    """A deflated DICOM's dataset: its header is inflated and checked first, the rest only as
    far as that header declares (pydicom would inflate it all, whatever its size)."""
    from pydicom.filereader import read_dataset

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = inflater.decompress(raw, 1 << 20)  # the elements before the pixels: a few KB
    budget = limit("MAX_DECODED_BYTES") + (16 << 20)
    try:
        header = read_dataset(io.BytesIO(head), False, True, stop_when=lambda tag, *_: tag >= 0x7FE00000)
    except Exception:  # a header over 1 MiB: inflate to the byte limit, the full parse checks
        header = None
    if header is not None and "Rows" in header:
        budget = (2 << 20) + _dicom_header(header, path, every_frame=True)
    body = head + inflater.decompress(inflater.unconsumed_tail, budget + 1 - len(head))
    if len(body) > budget:
        raise ImageError(path, f"deflated DICOM inflates past {budget:,} bytes, more than its header declares")
    return read_dataset(io.BytesIO(body), False, True)


def _read_dicom(data: bytes, path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filereader import read_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    try:
        fp = io.BytesIO(data)
        fp.seek(132)  # after the preamble and DICM: the file meta group, always explicit VR LE
        meta = read_dataset(fp, False, True, stop_when=lambda tag, *_: tag.group != 2)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return pydicom.dcmread(io.BytesIO(data))
        ds = _inflate(memoryview(data)[fp.tell() :], path)
        ds.file_meta = FileMetaDataset(meta)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated bytes are
        return ds
    except (ImageError, UsageError):
        raise
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageError(path, f"unreadable DICOM: {exc}") from None


def _check_first_frame(pixel_data: bytes, path) -> None:
    """A compressed frame's own header (JPEG SOF, JPEG 2000 SIZ) sets what its decoder allocates,
    whatever Rows and Columns say: check it too."""
    at = 8 + int.from_bytes(pixel_data[4:8], "little")  # past the Basic Offset Table item
    if pixel_data[at : at + 4] != b"\xfe\xff\x00\xe0":
        return
    size = int.from_bytes(pixel_data[at + 4 : at + 8], "little")
    frame = bytes(pixel_data[at + 8 : at + 8 + min(size, 1 << 20)])
    if frame.startswith(b"\xff\xd8"):
        check_size(path, "DICOM's JPEG frame", *jpeg_header(frame, path, "DICOM's JPEG frame"))
    elif (j := frame.find(b"\xff\x4f\xff\x51", 0, 4096)) >= 0 and len(frame) >= j + 43:
        width, height, x0, y0 = struct.unpack(">IIII", frame[j + 8 : j + 24])
        samples, depth = int.from_bytes(frame[j + 40 : j + 42], "big"), 2 if frame[j + 42] & 0x7F >= 8 else 1
        check_size(path, "DICOM's JPEG 2000 frame", height - y0, width - x0, samples, depth)


def decode_dicom(data: bytes, path: str | os.PathLike) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    ds = _read_dicom(data, path)
    _dicom_header(ds, path)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        if syntax is not None and syntax.is_encapsulated and "PixelData" in ds:
            _check_first_frame(ds.PixelData, path)
        pixels = pixel_array(ds, index=0)  # the first frame only: never every frame of a multi-frame file
    except (ImageError, UsageError):
        raise
    except Exception as exc:
        if syntax is not None and syntax.is_compressed and "plugin" in str(exc).lower():
            hint = "pip install pillow pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
            raise ImageError(path, f"compressed DICOM ({syntax.name}), no decoder installed ({hint})") from None
        raise ImageError(path, f"unreadable DICOM: {exc}") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        return to_gray(pixels[:, :, ::-1].astype(np.uint8))
    img = pixels
    rescaled = float(getattr(ds, "RescaleSlope", 1) or 1) != 1 or float(getattr(ds, "RescaleIntercept", 0) or 0) != 0
    if rescaled or "ModalityLUTSequence" in ds:  # skipped when it is the identity: it costs a float64 copy
        img = apply_modality_lut(img, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        img = apply_voi_lut(img, ds)
    img = to_uint8(img)
    if photometric == "MONOCHROME1":  # 0 means white: invert so bone is bright everywhere
        img = 255 - img
    return img
