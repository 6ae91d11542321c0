"""`hpml synth`: a generated raw corpus in the five COVIDx source layouts.

Same seed -> byte-identical files. `per_class` images of each class are usable under the default
(COVID-Net) label policy: normals come only from RSNA, as in COVIDx. The files carry the quirks
of the real sources: gray, RGB and RGBA PNGs, a 16-bit PNG, gray/RGB/CMYK JPEGs, RSNA DICOMs
(12-bit raw, JPEG Baseline like the real ones, some MONOCHROME1, rescale slope/intercept), CRLF
and `Patientid` headers, hierarchical ieee8023 findings, RSNA patients with several box rows,
Figure1 rows with a blank view and lettered ids (COVID-00012a/b: one patient), SIRM metadata in
an .xlsx with "COVID 7" names for `COVID (7).png` files. And rows a correct builder leaves out
or treats specially (`_add_quirk_rows`): a lateral film, findings COVIDx excludes (ARDS,
Pneumocystis, Actualmed "No finding"), a blank finding, RSNA "No Lung Opacity", a SIRM row whose
URL ieee8023 also has, a SIRM row on COVID-Net's discard list, and a re-encoded, padded copy of a
Figure1 film in ieee8023 (as ieee8023 patient 79 copies Figure1 COVID-00001).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hpml.core.config import CLASSES
from preprocess.synth.files import (
    ACTUALMED_HEADER,
    FIGURE1_HEADER,
    IEEE_HEADER,
    _csv,
    _write_dicom,
    _write_raster,
    write_xlsx,
)
from preprocess.synth.images import film_identity, random_size, render

IEEE, ACTUALMED, FIGURE1, RSNA, SIRM = (
    "covid-chestxray-dataset",
    "Actualmed-COVID-chestxray-dataset",
    "Figure1-COVID-chestxray-dataset",
    "rsna",
    "COVID-19_Radiography_Database",
)
# Which sources carry each class under COVID-Net's policy, and the finding text they use.
CARRIERS = {
    "COVID-19": [
        (IEEE, "COVID-19"),
        (ACTUALMED, "COVID-19"),
        (FIGURE1, "COVID-19"),
        (SIRM, "COVID-19"),
        (FIGURE1, "COVID-19, ARDS"),
    ],
    "pneumonia": [(IEEE, "SARS"), (IEEE, "Pneumonia/Bacterial/Streptococcus"), (RSNA, "Lung Opacity")],
    "normal": [(RSNA, "Normal")],
}


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
        i = patients = 0
        per_source: dict[str, int] = {}
        while i < per_class:
            source, finding = carriers[patients % len(carriers)]
            patients += 1
            # Every third patient of a source has two films (kept together by the patient-level
            # split); RSNA ids are image ids and SIRM names one film each, so one film there.
            nth = per_source[source] = per_source.get(source, -1) + 1
            films = 2 if source not in (RSNA, SIRM) and nth % 3 == 0 and i + 2 <= per_class else 1
            patient = f"{label[:3].lower()}{len(plan):05d}"
            if source == FIGURE1:  # images/<patientid>.jpg: a second film needs a lettered id
                patient = f"COVID-{len(plan):05d}"
            for k in range(films):
                pid = f"{patient}{'ab'[k]}" if source == FIGURE1 and films > 1 else patient
                view = "PA" if rng.random() < 0.6 else "AP"
                if source == FIGURE1 and (nth + k) % 2 == 0:
                    view = ""  # Figure1's view is often blank; it is not a lateral film
                plan.append(Image(source, pid, finding, view, label, len(plan)))
            i += films
    return plan


def _ieee_row(pid: str, finding: str, view: str, name: str) -> list[str]:
    url = f"https://radiopaedia.org/cases/synthetic-{pid}"
    return [pid, "0", "", "", finding, "", view, "X-ray", "", "", name, "", url, "", "", "", ""]


def _actualmed_row(pid: str, finding: str, view: str, name: str) -> list[str]:
    return [pid, "", "", "", finding, "", "", "", view, "X-ray", name, "", ""]


def synth(out: Path, per_class: int, seed: int = 0) -> dict[str, int]:
    """Write the corpus under `out`; returns images written per source."""
    rng = np.random.default_rng(seed)
    plan = _plan(per_class, rng)
    for source in (IEEE, ACTUALMED, FIGURE1):
        (out / source / "images").mkdir(parents=True, exist_ok=True)
    (out / RSNA / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    (out / SIRM / "COVID").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[list[str]]] = {IEEE: [], ACTUALMED: [], FIGURE1: [], SIRM: []}
    rsna_labels: list[list[str]] = []
    rsna_info: list[list[str]] = []
    counts = {s: 0 for s in (IEEE, ACTUALMED, FIGURE1, RSNA, SIRM)}
    raster_kinds = ["jpeg", "rgbjpeg", "png", "rgba", "png16", "cmyk"]
    figure1_first = None
    for im in plan:
        h, w = random_size(rng)
        pixels = film_identity(render(im.label, h, w, rng), rng)
        counts[im.source] += 1
        if im.source == RSNA:
            # Every third RSNA film is a JPEG Baseline DICOM, as the real challenge files are.
            _write_dicom(
                out / RSNA / "stage_2_train_images" / f"{im.patient}.dcm",
                pixels,
                im.patient,
                monochrome1=im.index % 4 == 0,
                jpeg=im.index % 3 == 1,
            )
            boxes = int(rng.integers(1, 4)) if im.finding == "Lung Opacity" else 1
            target = "1" if im.finding == "Lung Opacity" else "0"
            for _ in range(boxes):
                box = ["264", "152", "213", "379"] if target == "1" else ["", "", "", ""]
                rsna_labels.append([im.patient, *box, target])
                rsna_info.append([im.patient, im.finding])
            continue
        kind = raster_kinds[im.index % len(raster_kinds)]
        if im.source == SIRM:
            number = len(rows[SIRM]) + 1  # FILE NAME "COVID 7", file "COVID (7).png"
            _write_raster(out / SIRM / "COVID" / f"COVID ({number}).png", pixels, "png")
            rows[SIRM].append(
                [f"COVID {number}", "PNG", f"{w}*{h}", f"https://www.sirm.org/2020/03/synthetic-caso-{number}/"]
            )
            continue
        if im.source == FIGURE1:
            kind = "cmyk" if im.index % 5 == 0 else "jpeg"
            name = f"{im.patient}.jpg"  # Figure 1: images/<patientid>.jpg, no file column
            _write_raster(out / FIGURE1 / "images" / name, pixels, kind)
            rows[FIGURE1].append([im.patient, "", "", im.finding, "", im.view, "X-ray", ""])
            if figure1_first is None:
                figure1_first = pixels
            continue
        ext = ".png" if kind in ("png", "rgba", "png16") else ".jpeg"
        name = f"{im.patient}-{im.index}{ext}"
        _write_raster(out / im.source / "images" / name, pixels, kind)
        row = _ieee_row if im.source == IEEE else _actualmed_row
        rows[im.source].append(row(im.patient, im.finding, im.view, name))
    _add_quirk_rows(rows, rsna_labels, rsna_info, out, rng, figure1_first)
    _csv(out / IEEE / "metadata.csv", IEEE_HEADER, rows[IEEE])
    _csv(out / ACTUALMED / "metadata.csv", ACTUALMED_HEADER, rows[ACTUALMED], newline="\r\n")
    _csv(out / FIGURE1 / "metadata.csv", FIGURE1_HEADER, rows[FIGURE1])
    _csv(out / RSNA / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rsna_labels)
    _csv(out / RSNA / "stage_2_detailed_class_info.csv", ["patientId", "class"], rsna_info)
    write_xlsx(out / SIRM / "COVID.metadata.xlsx", ["FILE NAME", "FORMAT", "SIZE", "URL"], rows[SIRM])
    return counts


def _add_quirk_rows(rows, rsna_labels, rsna_info, out: Path, rng: np.random.Generator, figure1_first) -> None:
    """Rows a correct builder leaves out or treats specially (see the module docstring)."""

    def film(label: str, source: str, name: str, kind: str = "jpeg") -> None:
        _write_raster(out / source / "images" / name, film_identity(render(label, 300, 300, rng), rng), kind)

    film("COVID-19", IEEE, "lateral-0.jpeg")
    rows[IEEE].append(_ieee_row("lat0", "COVID-19", "L", "lateral-0.jpeg"))
    film("pneumonia", IEEE, "ards-0.jpeg")  # pneumonia under --labels extended only
    rows[IEEE].append(_ieee_row("ards0", "ARDS", "PA", "ards-0.jpeg"))
    film("pneumonia", IEEE, "pneumocystis-0.png", "png")
    rows[IEEE].append(_ieee_row("pcp0", "Pneumonia/Fungal/Pneumocystis", "AP Supine", "pneumocystis-0.png"))
    for k in range(2):  # normal under --labels extended only
        film("normal", ACTUALMED, f"nofinding-{k}.png", "png")
        rows[ACTUALMED].append(_actualmed_row(f"ANON9{k}", "No finding", "PA", f"nofinding-{k}.png"))
    film("COVID-19", ACTUALMED, "inconclusive-0.png", "png")
    rows[ACTUALMED].append(_actualmed_row("ANON99", "", "PA", "inconclusive-0.png"))  # blank finding
    for k in range(2):
        pid = f"notnormal{k}"
        rsna_labels.append([pid, "", "", "", "", "0"])
        rsna_info.append([pid, "No Lung Opacity / Not Normal"])
    # SIRM: a row ieee8023 also has (same URL) and a row on COVID-Net's discard list.
    overlap = next(r for r in rows[IEEE] if r[4] == "COVID-19" and r[6] != "L")
    for number, url in ((9001, overlap[12]), (217, "https://www.sirm.org/2020/03/synthetic-caso-217/")):
        _write_raster(
            out / SIRM / "COVID" / f"COVID ({number}).png", film_identity(render("COVID-19", 400, 400, rng), rng), "png"
        )
        rows[SIRM].append([f"COVID {number}", "PNG", "400*400", url])
    # ieee8023's re-encoded, padded copy of a Figure1 film: other bytes, other size, same picture.
    if figure1_first is not None:
        copy = cv2.resize(figure1_first, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
        copy = cv2.copyMakeBorder(copy, 24, 24, 0, 0, cv2.BORDER_CONSTANT, value=0.0)
        name = "figure1-5e73d7ae897e27ff066a30cb-98.jpeg"
        _write_raster(out / IEEE / "images" / name, copy, "jpeg")
        rows[IEEE].append(_ieee_row("79", "COVID-19", "PA", name))
