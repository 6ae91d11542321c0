"""`hpml covidx build` and `hpml covidx import`: the COVIDx split as a tested command.

build: scan the sources -> check every image file (exists, whole, sha256) -> drop exact
duplicates (first occurrence by source order wins) -> patient-level stratified split ->
train.txt / val.txt / test.txt + split.json, each written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hpml.config import CLASSES
from hpml.imaging import ImageError, check_complete, read_bytes
from preprocess.csvio import SourceError
from preprocess.sources import Entry, Skip, SourceScan, scan_source
from preprocess.split import SPLITS, patient_key, split_patients
from preprocess.splitfile import SplitLine, read_split, write_split, write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    test_per_class: dict[str, int] | None = None


def _hash_file(path: Path) -> str:
    """sha256 of a whole, recognisable image; raises ImageError otherwise."""
    data = read_bytes(path)
    check_complete(data, path)
    return hashlib.sha256(data).hexdigest()


def _check_images(scans: list[SourceScan]) -> tuple[list[tuple[Entry, str]], list[Skip]]:
    entries = [(scan, e) for scan in scans for e in scan.entries]
    paths = [scan.root / e.filename for scan, e in entries]

    def attempt(path: Path) -> str | ImageError:
        try:
            return _hash_file(path)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib and file reads release the GIL
        results = list(pool.map(attempt, paths))
    good, skips = [], []
    for (scan, entry), result in zip(entries, results, strict=True):
        if isinstance(result, ImageError):
            skips.append(Skip(entry.source, str(scan.root / entry.filename), result.reason, entry.filename))
        else:
            good.append((entry, result))
    return good, skips


def _dedupe(items: list[tuple[Entry, str]]) -> tuple[list[tuple[Entry, str]], list[Skip]]:
    first: dict[str, Entry] = {}
    kept, skips = [], []
    for entry, digest in items:
        if digest in first:
            other = first[digest]
            why = f"duplicate of {other.source}/{other.filename}"
            if other.label != entry.label:
                why += f" (labelled {other.label} there)"
            skips.append(Skip(entry.source, entry.filename, why, entry.filename))
        else:
            first[digest] = entry
            kept.append((entry, digest))
    return kept, skips


def build(sources: list[Path], out: Path, options: BuildOptions = BuildOptions()) -> dict:
    """Build the split; returns the split.json content. Raises SourceError when nothing is usable."""
    scans = [scan_source(Path(s)) for s in sources]
    names = Counter(scan.name for scan in scans)
    if clash := [n for n, c in names.items() if c > 1]:
        raise SourceError(f"two sources share the folder name {clash[0]!r}; rename one")
    for scan in scans:
        log.info("%s: %s layout, %d usable rows, %d skipped", scan.root, scan.layout,
                 len(scan.entries), len(scan.skips))  # fmt: skip
    checked, bad_files = _check_images(scans)
    kept, duplicates = _dedupe(checked)
    skips = [s for scan in scans for s in scan.skips] + bad_files + duplicates
    if not kept:
        _log_skips(skips)
        why = Counter(_reason_kind(s.reason) for s in skips).most_common()
        raise SourceError(
            f"no usable images in {', '.join(map(str, sources))}; skipped rows: "
            + (", ".join(f"{n} {kind}" for kind, n in why) or "none (no rows at all)")
        )
    entries = [e for e, _ in kept]
    assignment, conflicts = split_patients(
        entries, options.seed, options.val_fraction, options.test_fraction, options.test_per_class
    )
    lines: dict[str, list[SplitLine]] = {s: [] for s in SPLITS}
    for e in entries:
        lines[assignment[patient_key(e)]].append(SplitLine(e.patient, e.filename, e.label, e.source))
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split(out / f"{split}.txt", lines[split])
    meta = _describe(scans, lines, skips, conflicts, kept, options, out)
    write_text_atomic(out / "split.json", json.dumps(meta, indent=1) + "\n")
    _log_skips(skips)
    return meta


def _describe(scans, lines, skips, conflicts, kept, options, out) -> dict:
    digest = {(e.source, e.filename): d for e, d in kept}
    counts = {
        split: {c: dict(Counter(x.source for x in ls if x.label == c)) for c in CLASSES} for split, ls in lines.items()
    }
    return {
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "test_fraction": options.test_fraction,
        "test_per_class": options.test_per_class,
        "roots": {s.name: str(s.root.resolve()) for s in scans},
        "sources": {
            s.name: {
                "layout": s.layout,
                "csv_sha256": {t.path.name: t.sha256 for t in s.tables},
                "csv_encoding": {t.path.name: t.encoding for t in s.tables},
                "quirks": s.notes,
            }
            for s in scans
        },
        "counts": counts,
        "patients": {s: len({(x.source, x.patient) for x in ls}) for s, ls in lines.items()},
        "images": {s: len(ls) for s, ls in lines.items()},
        "conflicting_label_patients": [f"{src}:{pid}" for src, pid in conflicts],
        "dropped": dict(Counter(_reason_kind(s.reason) for s in skips).most_common()),
        "skipped": [vars(s) for s in skips],
        "sha256": {
            f"{x.source}/{x.filename}": digest[(x.source, x.filename)] for ls in lines.values() for x in ls
        },  # fmt: skip
    }


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary ('not a frontal view ('L')' -> 'not a frontal view')."""
    return reason.split(" (")[0].split(" of ")[0].split(": ")[0]


def _log_skips(skips: list[Skip], shown: int = 5) -> None:
    by_kind: dict[str, list[Skip]] = defaultdict(list)
    for s in skips:
        by_kind[_reason_kind(s.reason)].append(s)
    for kind, group in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        log.warning("skipped %d row(s): %s", len(group), kind)
        for s in group[:shown]:
            log.warning("    %s: %s", s.where, s.reason)
        if len(group) > shown:
            log.warning("    ... and %d more (all listed in split.json)", len(group) - shown)


def import_published(
    train_file: Path, test_file: Path, train_images: Path, test_images: Path, out: Path,
    options: BuildOptions = BuildOptions(),
) -> dict:  # fmt: skip
    """Use published train_COVIDx.txt / test_COVIDx.txt; val is carved from train by patient."""
    train = read_split(train_file, "covidx-train")
    test = read_split(test_file, "covidx-test")
    train = [SplitLine(x.patient, x.filename, x.label, "covidx-train") for x in train]
    test = [SplitLine(x.patient, x.filename, x.label, "covidx-test") for x in test]
    unique_train = sorted(set(train))  # the published train file repeats RSNA lines
    assignment, conflicts = split_patients(unique_train, options.seed, options.val_fraction, 0.0)
    lines = {
        "train": [x for x in unique_train if assignment[patient_key(x)] == "train"],
        "val": [x for x in unique_train if assignment[patient_key(x)] == "val"],
        "test": sorted(set(test)),
    }
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split(out / f"{split}.txt", lines[split])
    meta = {
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "imported_from": [str(train_file), str(test_file)],
        "roots": {"covidx-train": str(train_images.resolve()), "covidx-test": str(test_images.resolve())},
        "counts": {s: {c: sum(x.label == c for x in ls) for c in CLASSES} for s, ls in lines.items()},
        "patients": {s: len({x.patient for x in ls}) for s, ls in lines.items()},
        "images": {s: len(ls) for s, ls in lines.items()},
        "duplicate_lines_dropped": {
            "train": len(train) - len(unique_train), "test": len(test) - len(lines["test"]),
        },
        "conflicting_label_patients": [f"{src}:{pid}" for src, pid in conflicts],
    }  # fmt: skip
    write_text_atomic(out / "split.json", json.dumps(meta, indent=1) + "\n")
    return meta


def summary_table(meta: dict) -> str:
    """The seed README's 'COVIDx data distribution' table: split x class image counts."""
    rows = []
    for split in SPLITS:
        per_class = meta["counts"][split]
        n = [sum(v.values()) if isinstance(v, dict) else v for v in (per_class[c] for c in CLASSES)]
        rows.append((split, *n, sum(n)))
    head = ("Type", *CLASSES, "Total")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "| " + " | ".join(f"{{:>{w}}}" for w in widths) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt.format(*head), sep, *(fmt.format(*r) for r in rows)])


__all__ = ["BuildOptions", "build", "import_published", "summary_table", "SourceError"]
