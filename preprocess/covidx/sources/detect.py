"""Which source a folder is, recognised by its files, never by its name (renamed clones work).

  ieee8023     metadata.csv with a `filename` column        + images/<filename>
  actualmed    metadata.csv with an `imagename` column       + images/<imagename>
  figure1      metadata.csv with neither                     + images/<patientid>.jpg|.png
  rsna         stage_2_train_labels.csv + stage_2_detailed_class_info.csv
               + stage_2_train_images/<patientId>.dcm
  sirm         COVID.metadata.xlsx (COVID-19 Radiography Database) + COVID/

One reader per layout: metadata (the three metadata.csv layouts), rsna, sirm.
"""

from __future__ import annotations

from pathlib import Path

from hpml.core.errors import SourceError
from preprocess.covidx import labels
from preprocess.covidx.sources.metadata import scan_metadata
from preprocess.covidx.sources.rsna import scan_rsna
from preprocess.covidx.sources.scan import SourceScan
from preprocess.covidx.sources.sirm import scan_sirm


def detect_layout(root: Path) -> str:
    if (root / "stage_2_train_labels.csv").is_file():
        return "rsna"
    if any(root.glob("*.metadata.xlsx")):
        return "sirm"
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise SourceError(
            f"{root}: matches no known source layout (expected metadata.csv, COVID.metadata.xlsx, "
            "or the RSNA stage_2_train_labels.csv + stage_2_detailed_class_info.csv)"
        )
    with meta.open("rb") as fh:
        head = fh.readline().decode("utf-8-sig", "replace").lower()
    columns = {c.strip() for c in head.split(",")}
    if "filename" in columns:
        return "ieee8023"
    if "imagename" in columns:
        return "actualmed"
    return "figure1"


def scan_source(root: Path, policy: str = labels.DEFAULT_POLICY) -> SourceScan:
    root = Path(root)
    labels.check_policy(policy)
    if not root.is_dir():
        raise SourceError(f"{root}: source folder not found")
    layout = detect_layout(root)
    if layout == "rsna":
        return scan_rsna(root, layout)
    if layout == "sirm":
        return scan_sirm(root, policy)
    return scan_metadata(root, layout, policy)
