"""The imaging policy on odd-but-valid and broken files, checked by pixel values."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from hpml.imaging import ImageError, fit_square, load_model_image, read_gray
from preprocess.synth.corpus import _write_dicom

RAMP = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))  # 48 x 64


def png(path, img):
    cv2.imwrite(str(path), img)
    return path


def test_gray_png_is_returned_unchanged(tmp_path):
    assert np.array_equal(read_gray(png(tmp_path / "g.png", RAMP)), RAMP)


def test_16_bit_png_is_windowed_to_full_8_bit_range(tmp_path):
    img16 = RAMP.astype(np.uint16) * 16  # 12-bit data in a 16-bit container
    out = read_gray(png(tmp_path / "d.png", img16))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.abs(out.astype(int) - RAMP).max() <= 1


def test_rgba_png_drops_alpha(tmp_path):
    rgba = cv2.cvtColor(RAMP, cv2.COLOR_GRAY2BGRA)
    rgba[..., 3] = 7  # nearly transparent: alpha must not darken the picture
    assert np.abs(read_gray(png(tmp_path / "a.png", rgba)).astype(int) - RAMP).max() <= 1


def test_16_bit_rgba_png(tmp_path):
    rgba = cv2.cvtColor(RAMP, cv2.COLOR_GRAY2BGRA).astype(np.uint16) * 257
    assert np.abs(read_gray(png(tmp_path / "a16.png", rgba)).astype(int) - RAMP).max() <= 1


def test_cmyk_jpeg_decodes_to_the_same_gray(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RAMP).convert("CMYK").save(buf, "JPEG", quality=95)
    (tmp_path / "c.jpg").write_bytes(buf.getvalue())
    out = read_gray(tmp_path / "c.jpg")
    assert out.shape == RAMP.shape
    assert np.abs(out.astype(int) - RAMP).mean() < 4  # JPEG loss only, not inverted


def test_dicom_monochrome1_is_inverted_and_monochrome2_is_not(tmp_path):
    img = RAMP / 255.0
    _write_dicom(tmp_path / "m1.dcm", img, "p1", monochrome1=True)
    _write_dicom(tmp_path / "m2.dcm", img, "p2", monochrome1=False)
    for name in ("m1.dcm", "m2.dcm"):
        out = read_gray(tmp_path / name)
        assert np.abs(out.astype(int) - RAMP).max() <= 1, name  # bright stays bright


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("patientid,finding\n"), "unrecognised signature"),
        (lambda p: p.write_bytes(cv2.imencode(".png", RAMP)[1].tobytes()[:300]), "truncated PNG"),
        (lambda p: p.write_bytes(cv2.imencode(".jpg", RAMP)[1].tobytes()[:400]), "truncated JPEG"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + b"IEND"), "corrupt image"),
    ],
)
def test_broken_files_raise_a_named_error(tmp_path, make, reason):
    path = tmp_path / "broken.png"
    make(path)
    with pytest.raises(ImageError) as err:
        read_gray(path)
    assert reason in str(err.value) and str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_gray(tmp_path / "nope.png")


def test_crop_policies():
    tall = np.zeros((200, 100), np.uint8)
    tall[:16] = 255  # a label band at the top: covidnet crops it away
    assert fit_square(tall, 32, "resize").shape == (32, 32)
    assert fit_square(tall, 32, "covidnet", top_crop=0.08).max() == 0
    box = fit_square(np.full((200, 100), 200, np.uint8), 32, "letterbox")
    assert box[:, :7].max() == 0 and box[:, 9:23].min() == 200  # padded sides, kept aspect
    with pytest.raises(ValueError, match="unknown crop policy"):
        fit_square(tall, 32, "stretch")


def test_real_16_bit_rgba_png_from_the_real_corpus(real_corpus):
    path = real_corpus / "covid-chestxray-dataset/images/23E99E2E-447C-46E5-8EB2-D35D12473C39.png"
    img, (h, w) = load_model_image(path, 64)
    assert img.shape == (64, 64) and img.dtype == np.uint8 and img.std() > 10
    assert (h, w) == cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]


def test_dicom_rescale_and_window_are_applied(tmp_path):
    import pydicom

    _write_dicom(tmp_path / "ct.dcm", RAMP / 255.0, "p3", monochrome1=False)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024  # stored 0..4095 -> -1024..7166
    ds.WindowCenter, ds.WindowWidth = 3071, 4096  # shows -1024..7166 only partly: 1023..5119
    ds.save_as(tmp_path / "ct.dcm")
    out = read_gray(tmp_path / "ct.dcm").astype(int)
    assert out[:, 0].max() == 0 and out[:, -1].min() == 255  # clipped at both ends by the window
    row = out[0]
    assert (np.diff(row) >= 0).all() and 0 < row[32] < 255  # monotonic ramp, mid values inside
