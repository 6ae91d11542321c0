"""Compressed DICOMs (real RSNA files are JPEG Baseline) and COVID-Net's crop arithmetic.

The compressed files are made here: JPEG Baseline and JPEG 2000 with Pillow, JPEG Lossless
(process 14, first-order prediction) with the small encoder below, so the decoders that setup.py
installs (Pillow, pylibjpeg-libjpeg, pylibjpeg-openjpeg) are what reads them.
"""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from hpml.imaging import fit_square, read_gray
from preprocess.synth.corpus import _write_dicom

RAMP8 = np.add.outer(np.arange(48) * 2, np.arange(64) * 2).astype(np.uint8)  # 48 x 64, 0..220
RAMP12 = np.add.outer(np.arange(48) * 40, np.arange(64) * 30).astype(np.uint16)  # 12-bit values


def _bits(value: int, n: int) -> str:
    return format(value, f"0{n}b") if n else ""


def jpeg_lossless(img: np.ndarray, precision: int) -> bytes:
    """ITU T.81 lossless JPEG (SOF3), one component, predictor 1 (left), Huffman table 0."""
    h, w = img.shape
    lengths = [0] * 4 + [17] + [0] * 11  # all 17 categories (0..16) get 5-bit codes
    codes = {ssss: _bits(ssss, 5) for ssss in range(17)}
    x = img.astype(np.int64)
    out = []
    for r in range(h):
        for c in range(w):
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif r == 0:
                pred = x[r, c - 1]
            elif c == 0:
                pred = x[r - 1, c]
            else:
                pred = x[r, c - 1]
            diff = int(x[r, c] - pred)
            ssss = abs(diff).bit_length()
            extra = diff if diff >= 0 else diff + (1 << ssss) - 1
            out.append(codes[ssss] + _bits(extra, ssss if ssss < 16 else 0))
    stream = "".join(out)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0)  # byte stuffing
    dht = bytes([0x00]) + bytes(lengths) + bytes(range(17))
    sof = bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ss = 1: predictor 1
    seg = lambda marker, body: bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body  # noqa: E731
    return b"\xff\xd8" + seg(0xC4, dht) + seg(0xC3, sof) + seg(0xDA, sos) + bytes(data) + b"\xff\xd9"


def compressed_dicom(path, pixels: np.ndarray, frame: bytes, syntax, bits: int):
    import pydicom
    from pydicom.encaps import encapsulate

    _write_dicom(path, np.zeros((8, 8)), "p", monochrome1=False)  # a valid dataset to adapt
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits == 8 else 16), bits, bits - 1
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def raw_dicom_gray(tmp_path, pixels: np.ndarray, bits: int) -> np.ndarray:
    """What our policy makes of the same pixels stored uncompressed."""
    import pydicom

    path = tmp_path / "raw.dcm"
    _write_dicom(path, np.zeros((8, 8)), "p", monochrome1=False)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits == 8 else 16), bits, bits - 1
    ds.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return read_gray(path)


def test_jpeg_lossless_dicom_equals_the_uncompressed_one(tmp_path):
    from pydicom.uid import JPEGLosslessSV1

    path = compressed_dicom(tmp_path / "ll.dcm", RAMP12, jpeg_lossless(RAMP12, 12), JPEGLosslessSV1, 12)
    assert np.array_equal(read_gray(path), raw_dicom_gray(tmp_path, RAMP12, 12))


def test_jpeg_2000_lossless_dicom_equals_the_uncompressed_one(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    buf = io.BytesIO()
    Image.fromarray(RAMP8).save(buf, "JPEG2000", no_jp2=True)  # reversible 5/3 wavelet: lossless
    path = compressed_dicom(tmp_path / "j2k.dcm", RAMP8, buf.getvalue(), JPEG2000Lossless, 8)
    assert np.array_equal(read_gray(path), raw_dicom_gray(tmp_path, RAMP8, 8))


def test_jpeg_baseline_dicom_as_in_rsna(tmp_path):
    img = RAMP8 / 255.0
    _write_dicom(tmp_path / "rsna.dcm", img, "rsna-like", monochrome1=False, jpeg=True)
    import pydicom

    assert pydicom.dcmread(tmp_path / "rsna.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    out = read_gray(tmp_path / "rsna.dcm").astype(int)
    assert np.abs(out - raw_dicom_gray(tmp_path, RAMP8, 8).astype(int)).mean() < 2  # JPEG loss only


# COVID-Net data.py, written out again: crop_top, central_crop, then the resize.
def covidnet_reference(img: np.ndarray, size: int, top_percent: float = 0.08) -> np.ndarray:
    offset = int(img.shape[0] * top_percent)
    img = img[offset:]
    side = min(img.shape[0], img.shape[1])
    offset_h = int((img.shape[0] - side) / 2)
    offset_w = int((img.shape[1] - side) / 2)
    img = img[offset_h : offset_h + side, offset_w : offset_w + side]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)  # ours; COVID-Net: INTER_LINEAR


@pytest.mark.parametrize("shape", [(1019, 700), (700, 1019), (1019, 1019), (613, 611)])
def test_covidnet_policy_is_covidnets_crop_arithmetic(shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)  # 1019 * 0.08 = 81.52: int() and round() differ
    assert np.array_equal(fit_square(img, 64, "covidnet"), covidnet_reference(img, 64))
