"""Patient-level, class-stratified, seeded split into train / val / test.

Patients are grouped before they are placed: `groups` maps a patient key to a group key, so
patients that share a radiograph (a re-encoded copy found by preprocess.covidx.phash) land on one side.

Rule for patients whose images carry different labels (e.g. a normal film before a COVID-19
one): every image keeps its own label, and the patient is placed by its most severe label
(COVID-19 > pneumonia > normal), so the whole patient lands in one split. Such patients are
counted in split.json.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from hpml.core.config import CLASSES
from preprocess.covidx.labels import SEVERITY

SPLITS = ("train", "val", "test")


class Labelled(Protocol):
    source: str
    patient: str
    label: str


def patient_key(entry: Labelled) -> tuple[str, str]:
    return (entry.source, entry.patient)  # patient ids are only unique within a source


def split_patients(
    entries: Sequence[Labelled],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    test_per_class: dict[str, int] | None = None,
    groups: dict[tuple[str, str], tuple[str, str]] | None = None,
) -> tuple[dict[tuple[str, str], str], list[tuple[str, str]]]:
    """Assign each patient a split. Returns ({patient key: split}, conflicting patient keys).

    Targets are image counts per class: test gets `test_per_class[c]` images of class c (or
    `test_fraction` of them), val gets `val_fraction`; patients are drawn in a seeded order
    until a target is met, so whole patients move and the counts land close to the targets.
    """
    groups = groups or {}
    by_patient: dict[tuple[str, str], list[Labelled]] = defaultdict(list)
    for e in entries:
        by_patient[patient_key(e)].append(e)
    conflicts = sorted(k for k, es in by_patient.items() if len({e.label for e in es}) > 1)
    images: dict[tuple[str, str], list[Labelled]] = defaultdict(list)
    for key, es in by_patient.items():
        images[groups.get(key, key)].extend(es)
    stratum: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key in sorted(images):
        worst = max((e.label for e in images[key]), key=SEVERITY.__getitem__)
        stratum[worst].append(key)

    rng = random.Random(seed)
    assignment: dict[tuple[str, str], str] = {}
    for cls in CLASSES:
        keys = stratum.get(cls, [])
        rng.shuffle(keys)
        total = sum(len(images[k]) for k in keys)
        wanted_test = test_per_class.get(cls, 0) if test_per_class else round(total * test_fraction)
        targets = {"test": wanted_test, "val": round(total * val_fraction)}
        filled = {"test": 0, "val": 0}
        for key in keys:
            split = next((s for s in ("test", "val") if filled[s] < targets[s]), "train")
            assignment[key] = split
            if split != "train":
                filled[split] += len(images[key])
    return {key: assignment[groups.get(key, key)] for key in by_patient}, conflicts


def merge(pairs: Sequence[tuple[tuple[str, str], tuple[str, str]]]) -> dict[tuple[str, str], tuple[str, str]]:
    """Union of linked patient keys -> {patient key: group key} (the smallest key of its group)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(k: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {k: root(k) for k in parent}
