"""`hpml synth`: a generated raw corpus in the four COVIDx source layouts.

Same seed -> byte-identical files. The files carry the quirks of the real sources: gray, RGB
and RGBA PNGs, a 16-bit PNG, gray/RGB/CMYK JPEGs, RSNA DICOMs (12-bit, some MONOCHROME1,
rescale slope/intercept), lateral views to be left out, CRLF and `Patientid` headers, RSNA
patients with several box rows, and "No Lung Opacity" rows to be left out.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hpml.config import CLASSES
from preprocess.synth_images import random_size, render

IEEE, ACTUALMED, FIGURE1, RSNA = (
    "covid-chestxray-dataset", "Actualmed-COVID-chestxray-dataset",
    "Figure1-COVID-chestxray-dataset", "rsna",
)  # fmt: skip
# Which sources can carry each class (as in the real data), and the finding text they use.
CARRIERS = {
    "COVID-19": [(IEEE, "COVID-19"), (ACTUALMED, "COVID-19"), (FIGURE1, "COVID-19")],
    "pneumonia": [(IEEE, "SARS"), (IEEE, "Streptococcus"), (RSNA, "Lung Opacity")],
    "normal": [(RSNA, "Normal"), (ACTUALMED, "No finding"), (IEEE, "No Finding")],
}
IEEE_HEADER = ["Patientid", "offset", "sex", "age", "finding", "survival", "view", "modality",
               "date", "location", "filename", "doi", " url", "license", "clinical notes",
               "other notes", ""]  # fmt: skip
ACTUALMED_HEADER = ["patientid", "offset", "sex", "age", "finding", "survival", "temperature",
                    "pO2 saturation", "view", "modality", "imagename", "artifacts/distortion",
                    "notes"]  # fmt: skip
FIGURE1_HEADER = ["patientid", "age", "sex", "finding", "survival", "view", "modality", "notes"]


@dataclass
class Image:
    source: str
    patient: str
    finding: str
    view: str
    label: str
    index: int


def _plan(per_class: int, rng: np.random.Generator) -> list[Image]:
    plan: list[Image] = []
    for label in CLASSES:
        carriers = CARRIERS[label]
        i = 0
        while i < per_class:
            source, finding = carriers[i % len(carriers)]
            # Every third patient has two films (kept together by the patient-level split);
            # Figure 1 and RSNA name the file after the patient, so one film there.
            several = source not in (FIGURE1, RSNA) and (i // len(carriers)) % 3 == 0
            films = 2 if several and i + 2 <= per_class else 1
            patient = f"{label[:3].lower()}{len(plan):05d}"
            for _ in range(films):
                plan.append(Image(source, patient, finding, "PA" if rng.random() < 0.6 else "AP",
                                  label, len(plan)))  # fmt: skip
            i += films
    return plan


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


def _write_dicom(path: Path, img: np.ndarray, pid: str, monochrome1: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    stored = np.round(img * 4095.0).astype(np.uint16)
    if monochrome1:
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[pid])  # deterministic
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.BodyPartExamined = pid, "CR", "CHEST"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _csv(path: Path, header: list[str], rows: list[list[str]], newline: str = "\n") -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def synth(out: Path, per_class: int, seed: int = 0) -> dict[str, int]:
    """Write the corpus under `out`; returns images written per source."""
    rng = np.random.default_rng(seed)
    plan = _plan(per_class, rng)
    for source in (IEEE, ACTUALMED, FIGURE1):
        (out / source / "images").mkdir(parents=True, exist_ok=True)
    (out / RSNA / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[list[str]]] = {IEEE: [], ACTUALMED: [], FIGURE1: []}
    rsna_labels: list[list[str]] = []
    rsna_info: list[list[str]] = []
    counts = {s: 0 for s in (IEEE, ACTUALMED, FIGURE1, RSNA)}
    raster_kinds = ["jpeg", "rgbjpeg", "png", "rgba", "png16", "cmyk"]
    for im in plan:
        h, w = random_size(rng)
        pixels = render(im.label, h, w, rng)
        counts[im.source] += 1
        if im.source == RSNA:
            _write_dicom(out / RSNA / "stage_2_train_images" / f"{im.patient}.dcm", pixels,
                         im.patient, monochrome1=im.index % 4 == 0)  # fmt: skip
            boxes = int(rng.integers(1, 4)) if im.finding == "Lung Opacity" else 1
            target = "1" if im.finding == "Lung Opacity" else "0"
            for _ in range(boxes):
                box = ["264", "152", "213", "379"] if target == "1" else ["", "", "", ""]
                rsna_labels.append([im.patient, *box, target])
                rsna_info.append([im.patient, im.finding])
            continue
        kind = raster_kinds[im.index % len(raster_kinds)]
        if im.source == FIGURE1:
            kind = "cmyk" if im.index % 5 == 0 else "jpeg"
            name = f"{im.patient}.jpg"  # Figure 1: images/<patientid>.jpg, no file column
            _write_raster(out / FIGURE1 / "images" / name, pixels, kind)
            rows[FIGURE1].append([im.patient, "", "", im.finding, "", im.view, "X-ray", ""])
            continue
        ext = ".png" if kind in ("png", "rgba", "png16") else ".jpeg"
        name = f"{im.patient}-{im.index}{ext}"
        _write_raster(out / im.source / "images" / name, pixels, kind)
        if im.source == IEEE:
            rows[IEEE].append([im.patient, "0", "", "", im.finding, "", im.view, "X-ray", "", "",
                               name, "", "", "", "", "", ""])  # fmt: skip
        else:
            rows[ACTUALMED].append([im.patient, "", "", "", im.finding, "", "", "", im.view,
                                    "X-ray", name, "", ""])  # fmt: skip
    _add_left_out_rows(rows, rsna_labels, rsna_info, out, rng)
    _csv(out / IEEE / "metadata.csv", IEEE_HEADER, rows[IEEE])
    _csv(out / ACTUALMED / "metadata.csv", ACTUALMED_HEADER, rows[ACTUALMED], newline="\r\n")
    _csv(out / FIGURE1 / "metadata.csv", FIGURE1_HEADER, rows[FIGURE1])
    _csv(
        out / RSNA / "stage_2_train_labels.csv",
        ["patientId", "x", "y", "width", "height", "Target"],
        rsna_labels,
    )
    _csv(out / RSNA / "stage_2_detailed_class_info.csv", ["patientId", "class"], rsna_info)
    return counts


def _add_left_out_rows(rows, rsna_labels, rsna_info, out: Path, rng: np.random.Generator) -> None:
    """Rows a correct builder must leave out: lateral views and RSNA 'not normal'."""
    name = "lateral-0.jpeg"
    _write_raster(out / IEEE / "images" / name, render("COVID-19", 300, 300, rng), "jpeg")
    rows[IEEE].append(["lat0", "0", "", "", "COVID-19", "", "L", "X-ray", "", "", name,
                       "", "", "", "", "", ""])  # fmt: skip
    for k in range(2):
        pid = f"notnormal{k}"
        rsna_labels.append([pid, "", "", "", "", "0"])
        rsna_info.append([pid, "No Lung Opacity / Not Normal"])
