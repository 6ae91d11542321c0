"""The imaging policy: any raw chest X-ray file -> uint8 grayscale -> model-sized square.

Preprocessing and prediction both call `load_model_image`, so a model is served exactly the
pixels it was trained on. Formats: PNG (8/16-bit; gray, RGB, RGBA), JPEG (gray, RGB, CMYK),
DICOM (rescale, VOI window, MONOCHROME1 inverted; uncompressed, RLE, and through the decoders
setup.py installs -- Pillow, pylibjpeg-libjpeg, pylibjpeg-openjpeg -- JPEG Baseline as in the
real RSNA files, JPEG Lossless and JPEG 2000). EXIF orientation is ignored on purpose:
radiographs are stored as acquired, and phone-photo orientation tags are unreliable.

Hostile input is refused with an ImageError naming the file and the reason, before any pixel is
decoded: the size comes from the file's own header (PNG IHDR, JPEG SOF, DICOM Rows/Columns/
NumberOfFrames/SamplesPerPixel/BitsAllocated, and the JPEG SOF / JPEG 2000 SIZ of a compressed
DICOM's first frame). Each limit is a constant of hpml.imaging.limits, overridden by its
environment variable, read at every call:
  HPML_MAX_PIXELS         pixels in the decoded frame, rows x columns (MAX_PIXELS, 50,000,000:
                          3.3x the largest real radiograph in shared/data/cxr-real, 4280 x 3520)
  HPML_MAX_DECODED_BYTES  bytes of the decoded array, rows x columns x samples x bytes per sample
                          (MAX_DECODED_BYTES, 256 MiB); a deflated DICOM counts every frame, since
                          all are inflated, and is inflated only as far as its header declares
  HPML_MAX_FILE_BYTES     bytes of one file (MAX_FILE_BYTES, 512 MiB)
Only regular files are read: a FIFO, device or directory is refused without waiting on it. A
multi-frame DICOM has its first frame decoded, never the others.

Modules: limits (the caps, header parsers, read_bytes), dicom, pixels (any depth -> 8-bit gray).
May import: hpml.core and third-party packages only.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from hpml.imaging.dicom import decode_dicom
from hpml.imaging.limits import ImageError, check_size, jpeg_header, limit, png_header, read_bytes
from hpml.imaging.pixels import to_gray, to_uint8

__all__ = ["POLICIES", "ImageError", "check_complete", "decode_gray", "encode", "fit_square", "limit"]
__all__ += ["load_model_image", "read_bytes", "read_gray", "sniff"]

# OpenCV's own threads fight MPI ranks for the same cores; parallelism comes from ranks.
cv2.setNumThreads(1)

POLICIES = ("resize", "covidnet", "letterbox")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sniff(head: bytes, path: str | os.PathLike = "") -> str:
    """Format from the first bytes (never the extension, which lies: `.png` text files exist)."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if not head:
        raise ImageError(path, "empty file")
    raise ImageError(path, "not a PNG, JPEG or DICOM file (unrecognised signature)")


def check_complete(data: bytes, path: str | os.PathLike = "") -> str:
    """Cheap structural check (no pixel decode): is the file whole? Returns the format.

    Decoders are lenient with truncation (libjpeg pads a cut JPEG with grey and only warns),
    so a truncated file must be caught here rather than trained on.
    """
    fmt = sniff(data[:132], path)
    if fmt == "png" and b"IEND" not in data[-64:]:
        raise ImageError(path, "truncated PNG (no IEND chunk)")
    if fmt == "jpeg" and b"\xff\xd9" not in data.rstrip(b"\x00")[-64:]:
        raise ImageError(path, "truncated JPEG (no end-of-image marker)")
    return fmt


def _wants_native_depth(data: bytes, fmt: str) -> bool:
    """16-bit PNGs must be decoded as stored: OpenCV's 8-bit path keeps only the high byte."""
    return fmt == "png" and len(data) > 24 and data[24] == 16  # IHDR bit depth


def _decode_raster(data: bytes, path: str | os.PathLike, fmt: str) -> np.ndarray:
    check_size(path, fmt.upper(), *(png_header if fmt == "png" else jpeg_header)(data, path))
    buf = np.frombuffer(data, np.uint8)
    try:
        if _wants_native_depth(data, fmt):
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
            if img is not None and img.ndim == 3:  # mix channels at full precision first
                img = to_gray(img.astype(np.float32))
        else:
            # The decoder's own gray output: libjpeg skips chroma upsampling, ~2x faster on RGB.
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:
        raise ImageError(path, f"decoder refused the image: {str(exc).strip().splitlines()[-1]}") from None
    if img is None or img.size == 0:
        raise ImageError(path, "decoder could not read the pixels (corrupt image)")
    return to_uint8(img)


def decode_gray(data: bytes, path: str | os.PathLike = "") -> np.ndarray:
    """Decode file bytes to a 2-D uint8 array; raises ImageError naming the problem."""
    fmt = check_complete(data, path)
    img = decode_dicom(data, path) if fmt == "dicom" else _decode_raster(data, path, fmt)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ImageError(path, f"unusable image shape {img.shape}")
    return img


def read_gray(path: str | os.PathLike) -> np.ndarray:
    return decode_gray(read_bytes(path), path)


def fit_square(gray: np.ndarray, size: int, policy: str = "resize", top_crop: float = 0.08):
    """Crop/resize policy -> (size, size) uint8.

    resize:    plain resize, aspect ratio not kept (HPML).
    covidnet:  COVID-Net's data.py crop arithmetic exactly: crop_top drops `int(h * top_crop)`
               rows (labels, markers), central_crop keeps `min(h, w)` square at offsets
               `int((h - side) / 2)`, `int((w - side) / 2)`. Only the resize differs: COVID-Net
               calls cv2.resize with its default INTER_LINEAR; we shrink with INTER_AREA (see
               `_resize`), which averages instead of sampling 2 of every 4-10 source pixels.
    letterbox: keep the aspect ratio, pad the short side with black.
    """
    if policy == "covidnet":
        gray = gray[int(gray.shape[0] * top_crop) :]
        h, w = gray.shape
        side = min(h, w)
        y, x = int((h - side) / 2), int((w - side) / 2)
        gray = gray[y : y + side, x : x + side]
    elif policy == "letterbox":
        h, w = gray.shape
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = _resize(gray, nw, nh)
        out = np.zeros((size, size), np.uint8)
        y, x = (size - nh) // 2, (size - nw) // 2
        out[y : y + nh, x : x + nw] = small
        return out
    elif policy != "resize":
        raise ValueError(f"unknown crop policy {policy!r} (choose from {', '.join(POLICIES)})")
    return _resize(gray, size, size)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    # INTER_AREA when shrinking avoids aliasing (CXRs are 4-10x larger than the model input).
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def load_model_image(
    path: str | os.PathLike, size: int, policy: str = "resize", top_crop: float = 0.08
) -> tuple[np.ndarray, tuple[int, int]]:
    """The one preprocessing function: file -> (size x size uint8 gray, original (h, w))."""
    gray = read_gray(path)
    return fit_square(gray, size, policy, top_crop), gray.shape


def encode(img: np.ndarray, encoding: str = "jpeg", quality: int = 95) -> bytes:
    """Encode a model-sized grayscale image for a record."""
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    elif encoding == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {img.shape} image as {encoding}")
    return buf.tobytes()
