"""What `hpml covidx build` and `hpml covidx import` are asked to do: seed, fractions, policies.

Checked when made (UsageError naming the option), so a bad value stops a build before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpml.core.errors import UsageError
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
    allow_outside_root: bool = False  # follow symlinks out of a source root (--follow-outside-links)

    def __post_init__(self) -> None:
        for option, value in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0.0 <= value < 1.0:  # also refuses NaN
                raise UsageError(f"{option} {value}: not a fraction in [0, 1)")
        for cls, n in (self.test_per_class or {}).items():
            if n < 0:
                raise UsageError(f"--test-per-class {cls}={n}: a count of test images cannot be negative")

    def check_train_left(self) -> None:
        """`covidx build` only (`import` takes test from the published list): val + test < 1."""
        test_by_fraction = self.test_list is None and self.test_per_class is None
        if test_by_fraction and self.val_fraction + self.test_fraction >= 1.0:
            raise UsageError(
                f"--val-fraction {self.val_fraction} + --test-fraction {self.test_fraction} "
                f"= {self.val_fraction + self.test_fraction:g}: must be below 1 (train would get no images)"
            )
