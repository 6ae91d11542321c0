"""Hostile input (issue 24): decoding is bounded by the header, before any pixel is decoded.

The bombs are made here, tiny files whose headers claim huge images: a 16-bit PNG of zeros, a
JPEG whose frame header lies, a deflated DICOM, a JPEG-compressed DICOM whose frame lies about its
size, a multi-frame DICOM. Each is decoded in a child process, whose peak memory (VmHWM) is read
before and after the decode; a FIFO and a device are read there too, under a timeout.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from hpml.core.errors import UsageError
from hpml.imaging import ImageError, read_bytes, read_gray

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHILD_GROWTH_MB = 64  # a refused bomb's decode may grow the child's peak memory by no more
RAMP16 = np.add.outer(np.arange(48) * 40, np.arange(64) * 30).astype(np.uint16)


def deflate_zeros(n: int, prefix: bytes = b"") -> bytes:
    """Raw deflate of prefix + n zero bytes, without compressing n bytes: blocks ended by a full
    flush start afresh, so one compressed 4 MiB block of zeros is repeated."""
    chunk = 1 << 22
    first, block, last = (zlib.compressobj(9, zlib.DEFLATED, -15) for _ in range(3))
    q, r = divmod(n, chunk)
    head = first.compress(prefix) + first.flush(zlib.Z_FULL_FLUSH)
    body = block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)
    return head + body * q + last.compress(bytes(r)) + last.flush()


def png(width: int, height: int, depth: int, color: int, idat: bytes) -> bytes:
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_zeros(width: int, height: int, depth: int = 16) -> bytes:
    """A whole, valid PNG of zeros (gray): 20000 x 20000 x 16 bit is 779 KB, 800 MB decoded."""
    n = height * (1 + width * depth // 8)  # each row: filter byte + samples, all zero
    adler = (n % 65521) << 16 | 1  # Adler-32 of n zero bytes
    return png(width, height, depth, 0, b"\x78\xda" + deflate_zeros(n) + adler.to_bytes(4, "big"))


def png_cut(width: int, height: int) -> bytes:
    """IHDR claims width x height; the image data holds 1000 bytes (IEND present: looks whole)."""
    return png(width, height, 8, 0, zlib.compress(bytes(1000)))


def jpeg_gray(rows: int, cols: int) -> bytes:
    return cv2.imencode(".jpg", np.full((rows, cols), 100, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A 16 x 16 JPEG whose frame header (SOF0) claims width x height: libjpeg fills the rest grey."""
    data = bytearray(jpeg_gray(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def dicom_dataset(rows, cols, bits, frames, syntax):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["bomb"])
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "bomb"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames != 1:
        ds.NumberOfFrames = frames
    return ds


def dicom_deflated_zeros(rows, cols, bits=16, frames=1, pixel_bytes=None) -> bytes:
    """Deflated explicit VR little endian; PixelData of zeros, `pixel_bytes` long (default: as the
    header declares). 12000 x 12000 x 16 bit is 281 KB, 288 MB inflated."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dicom_dataset(rows, cols, bits, frames, DeflatedExplicitVRLittleEndian)
    n = rows * cols * frames * bits // 8 if pixel_bytes is None else pixel_bytes
    body, meta = DicomBytesIO(), DicomBytesIO()
    for fp in (body, meta):
        fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(body, ds)
    write_file_meta_info(meta, ds.file_meta)
    pixel_data = b"\xe0\x7f\x10\x00OW\x00\x00" + n.to_bytes(4, "little")  # (7FE0,0010) OW, n bytes
    return bytes(128) + b"DICM" + meta.getvalue() + deflate_zeros(n, body.getvalue() + pixel_data)


def dicom_jpeg_frames(frames: list[bytes], rows: int, cols: int) -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = dicom_dataset(rows, cols, 8, len(frames), JPEGBaseline8Bit)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


CHILD = r"""
import json, resource, sys, time
from hpml.imaging import ImageError, read_gray

def status(key):
    return next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith(key))

# Room to show the damage without taking the machine: 3 GiB more address space at most.
resource.setrlimit(resource.RLIMIT_AS, ((status("VmSize:") + 3072) << 20, resource.RLIM_INFINITY))
base, start = status("VmHWM:"), time.monotonic()
try:
    out = {"decoded": list(read_gray(sys.argv[1]).shape)}
except ImageError as exc:
    out = {"path": exc.path, "reason": exc.reason}
except BaseException as exc:
    out = {"crash": f"{type(exc).__name__}: {exc}"}
out.update(base_mb=base, peak_mb=status("VmHWM:"), seconds=round(time.monotonic() - start, 2))
print(json.dumps(out))
"""


def decode_in_child(path, timeout: float = 60, **env) -> dict:
    """read_gray(path) in a fresh process: its outcome, and its peak memory before and after."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding {path} did not return within {timeout} s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def claims(what: str, width: int, height: int) -> str:
    pixels = f"{width} x {height} pixels (width x height) = {width * height:,}"
    return f"{what} header claims {pixels}, over the limit of 50,000,000 pixels (HPML_MAX_PIXELS)"


BOMBS = {  # name: (file bytes, the reason it is refused; None: decoded)
    "png-16bit-zeros": (lambda: png_zeros(20000, 20000), claims("PNG", 20000, 20000)),
    "png-cut-short": (lambda: png_cut(50000, 50000), claims("PNG", 50000, 50000)),
    "jpeg-lying-sof": (lambda: jpeg_claiming(20000, 20000), claims("JPEG", 20000, 20000)),
    "dicom-deflated": (lambda: dicom_deflated_zeros(12000, 12000), claims("DICOM", 12000, 12000)),
    "dicom-jpeg-frame-lies": (
        lambda: dicom_jpeg_frames([jpeg_claiming(20000, 20000)], 64, 64),
        claims("DICOM's JPEG frame", 20000, 20000),
    ),
    "dicom-128-frames": (lambda: dicom_jpeg_frames([jpeg_gray(2048, 2048)] * 128, 2048, 2048), None),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_refused_from_its_header_and_memory_stays_bounded(tmp_path, name):
    make, reason = BOMBS[name]
    path = tmp_path / name
    path.write_bytes(make())
    assert path.stat().st_size < 7_000_000
    out = decode_in_child(path)
    if reason is None:  # 128 frames, 512 MB decoded: only the first frame (4 MB) is
        assert out.get("decoded") == [2048, 2048], out
    else:
        assert (out.get("path"), out.get("reason")) == (str(path), reason), out
    assert out["peak_mb"] - out["base_mb"] < CHILD_GROWTH_MB, out


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files_are_read_and_a_fifo_is_not_waited_on(tmp_path, kind):
    if kind == "fifo":
        path, reason = tmp_path / "pipe.png", "not a regular file: a FIFO (named pipe)"
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "device":
        path, reason = "/dev/zero", "not a regular file: a character device"
    else:
        path, reason = tmp_path, "not a regular file: a directory"
    out = decode_in_child(path, timeout=30)
    assert (out.get("path"), out.get("reason")) == (str(path), reason), out
    assert out["peak_mb"] - out["base_mb"] < CHILD_GROWTH_MB, out


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "ramp.png"
    path.write_bytes(cv2.imencode(".png", RAMP16)[1].tobytes())
    size = path.stat().st_size
    monkeypatch.setenv("HPML_MAX_FILE_BYTES", str(size))
    assert read_bytes(path) == path.read_bytes()
    monkeypatch.setenv("HPML_MAX_FILE_BYTES", str(size - 1))
    with pytest.raises(ImageError) as err:
        read_bytes(path)
    assert err.value.path == str(path)
    assert err.value.reason == f"file is {size:,} bytes, over the limit of {size - 1:,} (HPML_MAX_FILE_BYTES)"


def test_the_pixel_limit_reads_each_real_header_and_follows_the_environment(real_corpus, monkeypatch):
    """Every real PNG and JPEG: refused at one pixel below its own size (so the header was read
    right, and nothing decoded); the largest decodes at exactly its size."""
    from PIL import Image

    images = [p for p in real_corpus.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    sizes = {p: Image.open(p).size for p in images}  # lazy: the header only
    assert len(sizes) > 100
    for path, (width, height) in sizes.items():
        monkeypatch.setenv("HPML_MAX_PIXELS", str(width * height - 1))
        with pytest.raises(ImageError, match=f"header claims {width} x {height} pixels") as err:
            read_gray(path)
        assert err.value.path == str(path) and "HPML_MAX_PIXELS" in err.value.reason
    largest = max(sizes, key=lambda p: sizes[p][0] * sizes[p][1])
    width, height = sizes[largest]
    assert width * height < 50_000_000 / 3  # the default leaves room for ~4,000 x 5,000 films
    monkeypatch.setenv("HPML_MAX_PIXELS", str(width * height))
    assert read_gray(largest).shape == (height, width)
    monkeypatch.setenv("HPML_MAX_PIXELS", "lots")
    with pytest.raises(UsageError, match="HPML_MAX_PIXELS='lots': expected a positive whole number"):
        read_gray(largest)


def test_the_decoded_byte_limit_counts_samples_and_depth(tmp_path, monkeypatch):
    path = tmp_path / "rgb16.png"
    path.write_bytes(cv2.imencode(".png", np.dstack([RAMP16] * 3))[1].tobytes())  # 48 x 64 x 3 x 2 bytes
    monkeypatch.setenv("HPML_MAX_DECODED_BYTES", str(48 * 64 * 6 - 1))
    with pytest.raises(ImageError) as err:
        read_gray(path)
    assert err.value.reason == (
        "PNG header claims 64 x 48 pixels (width x height) x 3 samples x 2 bytes = 18,432 bytes decoded, "
        "over the limit of 18,431 bytes (HPML_MAX_DECODED_BYTES)"
    )
    monkeypatch.setenv("HPML_MAX_DECODED_BYTES", str(48 * 64 * 6))
    assert read_gray(path).shape == (48, 64)


def test_an_image_over_the_decoders_own_limit_is_an_image_error_not_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(png_cut(40000, 30000))  # 1.2 G pixels: over OpenCV's 2^30
    monkeypatch.setenv("HPML_MAX_PIXELS", "2e9")
    monkeypatch.setenv("HPML_MAX_DECODED_BYTES", "2e9")
    with pytest.raises(ImageError, match="decoder refused the image") as err:
        read_gray(path)
    assert err.value.path == str(path)


def test_a_multi_frame_dicom_decodes_its_first_frame_and_never_the_others(tmp_path):
    path = tmp_path / "frames.dcm"
    broken = b"\xff\xd8\xff\xdb" + b"\x00" * 64 + b"\xff\xd9"  # a JPEG no decoder accepts
    path.write_bytes(dicom_jpeg_frames([jpeg_gray(32, 40), broken, broken], 32, 40))
    img = read_gray(path)
    assert img.shape == (32, 40) and abs(int(img.mean()) - 100) <= 2


def test_a_deflated_dicom_inflates_only_as_far_as_its_header_declares(tmp_path, monkeypatch):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    twins = {}
    for syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds = dicom_dataset(*RAMP16.shape, 16, 1, syntax)
        ds.BitsStored, ds.HighBit, ds.PixelData = 12, 11, RAMP16.tobytes()
        ds.save_as(tmp_path / f"{syntax.name}.dcm", enforce_file_format=True)
        twins[syntax] = read_gray(tmp_path / f"{syntax.name}.dcm")
    assert np.array_equal(*twins.values())
    assert pydicom.dcmread(tmp_path / f"{DeflatedExplicitVRLittleEndian.name}.dcm").file_meta.TransferSyntaxUID == (
        DeflatedExplicitVRLittleEndian
    )
    lying = tmp_path / "lying.dcm"  # header: 64 x 64 x 16 bit; pixel data: 200 MB of zeros
    lying.write_bytes(dicom_deflated_zeros(64, 64, pixel_bytes=200 << 20))
    with pytest.raises(ImageError, match=r"deflated DICOM inflates past 2,105,344 bytes, more than its header"):
        read_gray(lying)
    frames = tmp_path / "frames.dcm"  # each frame under every limit; all 10, inflated, are not
    frames.write_bytes(dicom_deflated_zeros(1000, 1000, frames=10))
    monkeypatch.setenv("HPML_MAX_DECODED_BYTES", str(20_000_000 - 1))
    with pytest.raises(ImageError) as err:
        read_gray(frames)
    assert err.value.path == str(frames) and err.value.reason == (
        "DICOM header claims 1000 x 1000 pixels (width x height) x 1 samples x 2 bytes x 10 frames (all inflated) "
        "= 20,000,000 bytes decoded, over the limit of 19,999,999 bytes (HPML_MAX_DECODED_BYTES)"
    )
    monkeypatch.setenv("HPML_MAX_DECODED_BYTES", str(20_000_000))
    assert read_gray(frames).shape == (1000, 1000)
