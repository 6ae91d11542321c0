"""File writers for the synthetic corpus: images, DICOMs, CSVs and the SIRM .xlsx, all deterministic."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

IEEE_HEADER = [
    "Patientid",
    "offset",
    "sex",
    "age",
    "finding",
    "survival",
    "view",
    "modality",
    "date",
    "location",
    "filename",
    "doi",
    " url",
    "license",
    "clinical notes",
    "other notes",
    "",
]
ACTUALMED_HEADER = [
    "patientid",
    "offset",
    "sex",
    "age",
    "finding",
    "survival",
    "temperature",
    "pO2 saturation",
    "view",
    "modality",
    "imagename",
    "artifacts/distortion",
    "notes",
]
FIGURE1_HEADER = ["patientid", "age", "sex", "finding", "survival", "view", "modality", "notes"]


def _u8(img: np.ndarray) -> np.ndarray:
    return np.round(img * 255.0).astype(np.uint8)


def _write_raster(path: Path, img: np.ndarray, kind: str) -> None:
    if kind == "png16":
        ok, buf = cv2.imencode(".png", np.round(img * 4095.0).astype(np.uint16))  # 12 bits used
    elif kind == "rgba":
        rgba = cv2.cvtColor(_u8(img), cv2.COLOR_GRAY2BGRA)
        ok, buf = cv2.imencode(".png", rgba)
    elif kind == "png":
        ok, buf = cv2.imencode(".png", _u8(img))
    elif kind == "rgbjpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_u8(img), cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    elif kind == "cmyk":
        from PIL import Image as PILImage

        out = io.BytesIO()
        PILImage.fromarray(_u8(img)).convert("CMYK").save(out, "JPEG", quality=90)
        ok, buf = True, np.frombuffer(out.getvalue(), np.uint8)
    else:
        ok, buf = cv2.imencode(".jpg", _u8(img), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok, f"encoding {kind} failed"
    path.write_bytes(buf.tobytes())


def _write_dicom(path: Path, img: np.ndarray, pid: str, monochrome1: bool, jpeg: bool = False) -> None:
    """A 12-bit raw DICOM, or with `jpeg` an 8-bit JPEG Baseline one (the real RSNA encoding)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

    bits = 8 if jpeg else 12
    top = (1 << bits) - 1
    stored = np.round(img * top).astype(np.uint8 if jpeg else np.uint16)
    if monochrome1:
        stored = top - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[pid])  # deterministic
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.BodyPartExamined = pid, "CR", "CHEST"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, (8 if jpeg else 16), bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if jpeg:
        from PIL import Image as PILImage

        frame = io.BytesIO()
        PILImage.fromarray(stored).save(frame, "JPEG", quality=90)
        ds.PixelData = encapsulate([frame.getvalue()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _csv(path: Path, header: list[str], rows: list[list[str]], newline: str = "\n") -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def write_xlsx(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """An .xlsx sheet (openpyxl), with fixed timestamps so the same rows give the same bytes."""
    import datetime

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    fixed = datetime.datetime(2020, 3, 28)
    book.properties.created = book.properties.modified = fixed
    raw = io.BytesIO()
    book.save(raw)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2020, 3, 28, 0, 0, 0)), src.read(info.filename))
    path.write_bytes(out.getvalue())
