"""Pixel arrays of any depth or colour -> 8-bit gray, shared by the raster and DICOM decoders."""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Linear min-max window to 8 bits (16-bit PNGs often use only 10-12 bits)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype not in (np.uint16, np.float32):
        img = img.astype(np.float32)
    lo, hi, _, _ = cv2.minMaxLoc(img)
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)


def to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1:
        return img[:, :, 0]
    if channels == 4:  # alpha carries nothing in a radiograph: drop it
        img = img[:, :, :3]
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)
