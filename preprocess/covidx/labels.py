"""COVIDx label policy: every rule that decides whether a source row is used, and as what class.

Two policies, each rule in one place (README "COVIDx label policies" has the table):

covidnet (default) -- COVID-Net's create_COVIDx.ipynb, rule for rule:
  * one fixed, case-sensitive table (`COVIDNET_TABLE`); a finding not in it is left out;
  * ieee8023: the finding's last '/' level; only the views in `COVIDNET_VIEWS`, compared
    exactly; no modality check (the notebook has none: CT rows go through the view filter);
  * Figure1 and Actualmed: the finding's first ',' part; a blank finding is skipped; no view
    filter (Figure1's view is often blank) and no modality check;
  * RSNA: class 'Normal' -> normal, Target 1 -> pneumonia (a patient in both lists stays
    normal: the notebook adds normals first and skips patients it has already seen);
  * SIRM: all COVID-19; rows whose URL is also an ieee8023 (frontal-view) URL are dropped, and
    the discard list is matched with the notebook's own slice `name[name.find('(')+1 :
    name.find(')')]`. With the metadata's "COVID 100" names that slice is "COVID 10", so the list
    never matches -- as in the published train_COVIDx7A.txt, which holds COVID(100)..COVID(105).
extended -- hpml's broader mapping, only on request (`--labels extended`): every viral,
  bacterial and fungal pneumonia (ARDS, Pneumocystis, Tuberculosis, bare "Pneumonia", ...),
  "No finding" -> normal, frontal views compared case-insensitively, X-ray modality only, and
  the SIRM discard list applied by image number (what the notebook meant).
In both policies a blank view is kept: a blank view is not a lateral film.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpml.core.config import CLASSES

POLICIES = ("covidnet", "extended")
DEFAULT_POLICY = "covidnet"

# create_COVIDx.ipynb `mapping`, keys verbatim. 'Normal', 'Lung Opacity' and '1' are meant for
# RSNA, but the notebook looks every metadata finding up in the same table, so we do too.
COVIDNET_TABLE = {
    "COVID-19": "COVID-19",
    "SARS": "pneumonia",
    "MERS": "pneumonia",
    "Streptococcus": "pneumonia",
    "Klebsiella": "pneumonia",
    "Chlamydophila": "pneumonia",
    "Legionella": "pneumonia",
    "E.Coli": "pneumonia",
    "Normal": "normal",
    "Lung Opacity": "pneumonia",
    "1": "pneumonia",
}
COVIDNET_VIEWS = ("PA", "AP", "AP Supine", "AP semi erect", "AP erect")
SIRM_DISCARD = (
    "100",
    "101",
    "102",
    "103",
    "104",
    "105",
    "110",
    "111",
    "112",
    "113",
    "122",
    "123",
    "124",
    "125",
    "126",
    "217",
)

_COVID = {"covid-19", "covid19", "covid-19, ards", "sars-cov-2"}
_NORMAL = {"no finding", "normal"}
_PNEUMONIA = {
    "sars",
    "mers",
    "mers-cov",
    "ards",
    "streptococcus",
    "pneumocystis",
    "pneumonia",
    "klebsiella",
    "legionella",
    "chlamydophila",
    "e.coli",
    "escherichia coli",
    "staphylococcus",
    "mycoplasma",
    "influenza",
    "varicella",
    "herpes",
    "nocardia",
    "aspergillosis",
    "lipoid",
    "bacterial",
    "viral",
    "fungal",
    "tuberculosis",
    "lung opacity",
}
FRONTAL_VIEWS = {"pa", "ap", "ap supine", "ap semi erect", "ap erect"}
SEVERITY = {name: i for i, name in enumerate(CLASSES)}  # higher = more severe


@dataclass(frozen=True)
class Verdict:
    label: str | None  # None: left out
    reason: str = ""  # why it is left out ("kind (detail)", grouped by the part before " (")


def _out(reason: str) -> Verdict:
    return Verdict(None, reason)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown label policy {policy!r} (choose from {', '.join(POLICIES)})")
    return policy


def ieee8023(policy: str, finding: str, view: str, modality: str) -> Verdict:
    """covid-chestxray-dataset row -> class."""
    if check_policy(policy) == "covidnet":
        if view not in COVIDNET_VIEWS:
            return _out(f"view not in COVID-Net's list ({view!r})")
        return _covidnet_finding(finding.split("/")[-1], finding)
    if problem := _extended_view_modality(view, modality):
        return _out(problem)
    return _extended_finding(finding)


def first_comma(policy: str, finding: str, view: str, modality: str) -> Verdict:
    """Figure1 / Actualmed row -> class (no view filter under covidnet)."""
    if not finding:
        return _out("no finding given (unconfirmed)")
    if check_policy(policy) == "covidnet":
        return _covidnet_finding(finding.split(",")[0], finding)
    if problem := _extended_view_modality(view, modality):
        return _out(problem)
    return _extended_finding(finding)


def rsna(classes: set[str], targets: set[str]) -> Verdict:
    """RSNA patient (all its rows in both label files) -> class; the same in both policies."""
    if "Normal" in classes:
        return Verdict("normal")
    if "1" in targets:
        return Verdict("pneumonia")
    if not classes:
        return _out("no class in detailed_class_info")
    return _out(f"RSNA {'/'.join(sorted(classes))!r} with Target 0 (left out)")


def sirm_discarded(policy: str, file_name: str) -> bool:
    """Is this SIRM row on COVID-Net's discard list (see the module docstring)?"""
    if check_policy(policy) == "covidnet":
        return file_name[file_name.find("(") + 1 : file_name.find(")")] in SIRM_DISCARD
    number = re.search(r"(\d+)\)?\s*$", file_name)
    return bool(number) and number.group(1) in SIRM_DISCARD


def _covidnet_finding(key: str, finding: str) -> Verdict:
    if key in COVIDNET_TABLE:
        return Verdict(COVIDNET_TABLE[key])
    return _out(f"finding not in COVID-Net's table ({finding!r})")


def _extended_view_modality(view: str, modality: str) -> str:
    if modality and modality.strip().lower() != "x-ray":
        return f"not an X-ray (modality {modality!r})"
    if view and " ".join(view.strip().lower().replace("_", " ").split()) not in FRONTAL_VIEWS:
        return f"not a frontal view ({view!r})"
    return ""


def _extended_finding(finding: str) -> Verdict:
    text = finding.strip().lower()
    if not text:
        return _out("no finding given (unconfirmed)")
    leaf = text.split("/")[-1].strip()
    if leaf in _COVID or text in _COVID or "covid" in leaf:
        return Verdict("COVID-19")
    if leaf in _NORMAL:
        return Verdict("normal")
    if leaf in _PNEUMONIA or "pneumonia" in leaf:
        return Verdict("pneumonia")
    return _out(f"unknown finding ({finding!r})")
