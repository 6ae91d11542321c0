"""What `hpml covidx build` and `hpml covidx import` are asked to do: seed, fractions, policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from preprocess.covidx import phash
from preprocess.covidx.labels import DEFAULT_POLICY


@dataclass(frozen=True)
class BuildOptions:
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    test_per_class: dict[str, int] | None = None
    labels: str = DEFAULT_POLICY  # "covidnet" (COVID-Net's table) or "extended"
    test_list: Path | None = None  # a published test_COVIDx*.txt: pins test membership
    drop_duplicates: bool = False  # keep only the first copy of a re-encoded radiograph
    hash_cache: Path | None = field(default_factory=phash.default_cache)  # None: no cache
    workers: int = 0  # decoding processes for the fingerprints (0: up to 8, one per core)
