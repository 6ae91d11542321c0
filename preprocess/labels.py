"""COVIDx label policy: which findings and views count, and as what class.

As in COVID-Net's create_COVIDx: COVID-19 findings -> COVID-19; other viral, bacterial and
fungal pneumonias -> pneumonia; no finding -> normal; frontal X-rays only. Findings may be
hierarchical in later ieee8023 versions ("Pneumonia/Viral/COVID-19"): the leaf decides.
"""

from __future__ import annotations

from hpml.config import CLASSES

_COVID = {"covid-19", "covid19", "covid-19, ards", "sars-cov-2"}
_NORMAL = {"no finding", "normal"}
_PNEUMONIA = {
    "sars", "mers", "mers-cov", "ards", "streptococcus", "pneumocystis", "pneumonia",
    "klebsiella", "legionella", "chlamydophila", "e.coli", "escherichia coli", "staphylococcus",
    "mycoplasma", "influenza", "varicella", "herpes", "nocardia", "aspergillosis",
    "lipoid", "bacterial", "viral", "fungal", "tuberculosis", "lung opacity",
}  # fmt: skip
FRONTAL_VIEWS = {"pa", "ap", "ap supine", "ap semi erect", "ap erect"}
SEVERITY = {name: i for i, name in enumerate(CLASSES)}  # higher = more severe


def map_finding(finding: str) -> str | None:
    """Class for a metadata `finding`, or None when it does not map (skipped, reported)."""
    text = finding.strip().lower()
    if not text:
        return None
    leaf = text.split("/")[-1].strip()
    if leaf in _COVID or text in _COVID or "covid" in leaf:
        return "COVID-19"
    if leaf in _NORMAL:
        return "normal"
    if leaf in _PNEUMONIA or "pneumonia" in leaf:
        return "pneumonia"
    return None


def is_frontal(view: str) -> bool:
    return " ".join(view.strip().lower().replace("_", " ").split()) in FRONTAL_VIEWS
