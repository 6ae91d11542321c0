"""`hpml covidx build`: the COVIDx split as a tested command.

scan the sources under a label policy (preprocess.covidx.labels) -> drop SIRM rows ieee8023 also has
-> keep only regular files inside their source root (preprocess.covidx.containment) -> check every
image file (exists, whole, sha256) -> drop exact duplicates (first by source order wins) ->
fingerprint every image (preprocess.covidx.phash) and join re-encoded copies of one radiograph
into one group (or drop them: `drop_duplicates`) -> pin the test set to a published
list (`test_list`) or split patient groups seeded and stratified -> train.txt / val.txt /
test.txt + split.json, each written atomically. `covidx import` lives in preprocess.covidx.published.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpml.core.config import CLASSES
from hpml.core.errors import SourceError
from hpml.core.files import write_text_atomic
from hpml.core.provenance import upstream
from hpml.imaging import ImageError, check_complete, read_bytes
from preprocess.covidx import phash
from preprocess.covidx import skips as skiplog
from preprocess.covidx.containment import contain
from preprocess.covidx.options import BuildOptions
from preprocess.covidx.sources.detect import scan_source
from preprocess.covidx.sources.scan import Entry, Skip, SourceScan
from preprocess.covidx.sources.sirm import drop_ieee_overlaps
from preprocess.covidx.split import SPLITS, merge, patient_key, split_patients
from preprocess.covidx.testlist import Pinning, pin
from preprocess.splitfile import SplitLine, write_split

log = logging.getLogger(__name__)


def _hash_file(path: Path) -> str:
    """sha256 of a whole, recognisable image; raises ImageError otherwise."""
    data = read_bytes(path)
    check_complete(data, path)
    return hashlib.sha256(data).hexdigest()


def _check_images(scans: list[SourceScan]) -> tuple[list[tuple[Entry, str]], list[Skip]]:
    entries = [(scan, e) for scan in scans for e in scan.entries]

    def attempt(path: Path) -> str | ImageError:
        try:
            return _hash_file(path)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib and file reads release the GIL
        results = list(pool.map(attempt, [scan.root / e.filename for scan, e in entries]))
    good, bad = [], []
    for (scan, entry), result in zip(entries, results, strict=True):
        if isinstance(result, ImageError):
            bad.append(Skip(entry.source, str(scan.root / entry.filename), result.reason, entry.filename))
        else:
            good.append((entry, result))
    return good, bad


def _dedupe(items: list[tuple[Entry, str]]) -> tuple[list[tuple[Entry, str]], list[Skip]]:
    first: dict[str, Entry] = {}
    kept, dropped = [], []
    for entry, digest in items:
        if digest in first:
            other = first[digest]
            why = f"duplicate of {other.source}/{other.filename}"
            if other.label != entry.label:
                why += f" (labelled {other.label} there)"
            dropped.append(Skip(entry.source, f"{entry.source}/{entry.filename}", why, entry.filename))
        else:
            first[digest] = entry
            kept.append((entry, digest))
    return kept, dropped


def _near_duplicates(kept, scans, options) -> tuple[list[tuple[Entry, str]], list[Skip], list[list[int]]]:
    """Fingerprint every kept image; returns (decodable items, undecodable skips, clusters)."""
    roots = {s.name: s.root for s in scans}
    prints = phash.fingerprints(
        [(roots[e.source] / e.filename, d) for e, d in kept], options.hash_cache, options.workers
    )
    good, bad = [], []
    for e, d in kept:
        if isinstance(prints[d], str):
            bad.append(Skip(e.source, str(roots[e.source] / e.filename), f"cannot decode ({prints[d]})", e.filename))
        else:
            good.append((e, d))
    pairs = phash.duplicate_pairs([prints[d] for _, d in good])
    linked = merge([((0, i), (0, j)) for i, j in pairs])  # type: ignore[list-item]
    clusters: dict[object, list[int]] = {}
    for (_, i), root in sorted(linked.items()):
        clusters.setdefault(root, []).append(i)
    return good, bad, sorted(clusters.values())


def build(sources: list[Path], out: Path, options: BuildOptions = BuildOptions()) -> dict:
    """Build the split; returns the split.json content. Raises SourceError when nothing is usable."""
    options.check_train_left()
    scans = [scan_source(Path(s), options.labels) for s in sources]
    names = Counter(scan.name for scan in scans)
    if clash := [n for n, c in names.items() if c > 1]:
        raise SourceError(f"two sources share the folder name {clash[0]!r}; rename one")
    drop_ieee_overlaps(scans)
    contain(scans, options.allow_outside_root)
    for scan in scans:
        log.info(
            "%s: %s layout, %d usable rows, %d skipped", scan.root, scan.layout, len(scan.entries), len(scan.skips)
        )
    checked, bad_files = _check_images(scans)
    kept, exact = _dedupe(checked)
    kept, undecodable, clusters = _near_duplicates(kept, scans, options)
    entries = [e for e, _ in kept]
    row_skips = [s for scan in scans for s in scan.skips]
    dropped_copies = []
    if options.drop_duplicates:
        drop = {i for c in clusters for i in c[1:]}
        for c in clusters:
            first = entries[c[0]]
            for i in c[1:]:
                e = entries[i]
                why = f"re-encoded copy of {first.source}/{first.filename}"
                dropped_copies.append(Skip(e.source, f"{e.source}/{e.filename}", why, e.filename))
    else:
        drop = set()
    missing = bad_files + undecodable
    skips = row_skips + missing + exact + dropped_copies
    if len(drop) == len(entries):
        skiplog.log_summary(skips)
        why = skiplog.counts(skips)
        raise SourceError(
            f"no usable images in {', '.join(map(str, sources))}; skipped rows: "
            + (", ".join(f"{n} {kind}" for kind, n in why.items()) or "none (no rows at all)")
        )
    groups = merge([(patient_key(entries[c[0]]), patient_key(entries[i])) for c in clusters for i in c[1:]])
    keep = [i for i in range(len(entries)) if i not in drop]
    pinning, lines = _assign([entries[i] for i in keep], groups, scans, options)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split(out / f"{split}.txt", lines[split])
    meta = _describe(scans, lines, skips, missing, kept, clusters, pinning, options)
    write_text_atomic(out / "split.json", json.dumps(meta, indent=1) + "\n")
    skiplog.log_summary(skips)
    return meta


def _assign(entries, groups, scans, options) -> tuple[Pinning | None, dict[str, list[SplitLine]]]:
    lines: dict[str, list[SplitLine]] = {s: [] for s in SPLITS}
    pinning = None
    if options.test_list is None:
        assignment, _ = split_patients(
            entries, options.seed, options.val_fraction, options.test_fraction, options.test_per_class, groups
        )
        where = [assignment[patient_key(e)] for e in entries]
    else:
        pinning = pin(Path(options.test_list), entries, {s.name: s.layout for s in scans})
        pinned = set(pinning.pinned)
        test_groups = {groups.get(patient_key(entries[i]), patient_key(entries[i])) for i in pinned}
        # Nothing but the listed images goes to test; their unlisted relatives (other films of
        # the patient, copies of the picture) go nowhere: in train they would leak the test set.
        held = [
            i
            for i, e in enumerate(entries)
            if i not in pinned and groups.get(patient_key(e), patient_key(e)) in test_groups
        ]
        pinning.held_out = [f"{entries[i].source}/{entries[i].filename}" for i in held]
        out = pinned | set(held)
        rest = [e for i, e in enumerate(entries) if i not in out]
        assignment, _ = split_patients(rest, options.seed, options.val_fraction, 0.0, None, groups)
        where = [
            "test" if i in pinned else "" if i in out else assignment[patient_key(e)] for i, e in enumerate(entries)
        ]
    for e, split in zip(entries, where, strict=True):
        if split:
            lines[split].append(SplitLine(e.patient, e.filename, e.label, e.source))
    return pinning, lines


def _describe(scans, lines, skips, missing, kept, clusters, pinning, options) -> dict:
    digest = {(e.source, e.filename): d for e, d in kept}
    placed = {(x.source, x.filename): s for s, ls in lines.items() for x in ls}
    entries = [e for e, _ in kept]
    counts = {
        split: {c: dict(Counter(x.source for x in ls if x.label == c)) for c in CLASSES} for split, ls in lines.items()
    }
    patients = {x for ls in lines.values() for x in ls}
    labels_of: dict[tuple[str, str], set[str]] = {}
    for x in patients:
        labels_of.setdefault((x.source, x.patient), set()).add(x.label)
    conflicts = sorted(k for k, v in labels_of.items() if len(v) > 1)
    meta = {
        "label_policy": options.labels,
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "test_fraction": None if options.test_list else options.test_fraction,
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
        # Which version of each source was read: its git commit where it is a clone, else its metadata's hash.
        "upstream": {s.name: upstream(s.root, {t.path.name: t.sha256 for t in s.tables}) for s in scans},
        "counts": counts,
        "patients": {s: len({(x.source, x.patient) for x in ls}) for s, ls in lines.items()},
        "images": {s: len(ls) for s, ls in lines.items()},
        "patient_ids": "per source; RSNA patientIds are image ids (one radiograph each)",
        "conflicting_label_patients": [f"{src}:{pid}" for src, pid in conflicts],
        "near_duplicates": [
            {
                "images": [f"{entries[i].source}/{entries[i].filename}" for i in c],
                "labels": [entries[i].label for i in c],
                "splits": [placed.get((entries[i].source, entries[i].filename), "dropped") for i in c],
            }
            for c in clusters
        ],
        "near_duplicates_dropped": options.drop_duplicates,
        "allow_outside_root": options.allow_outside_root,
        "missing_images": skiplog.summary(missing),
        "dropped": skiplog.counts(skips),
        "skipped": [vars(s) for s in skips],
        "sha256": {f"{x.source}/{x.filename}": digest[(x.source, x.filename)] for ls in lines.values() for x in ls},
    }
    if pinning is not None:
        meta["test_list"] = {
            "file": pinning.path,
            "listed": pinning.listed,
            "pinned": len(pinning.pinned),
            "missing": pinning.missing,
            "label_differs": pinning.label_differs,
            "ambiguous": pinning.ambiguous,
            "held_out_relatives": pinning.held_out,
        }
        log.warning(
            "test list %s: %d listed, %d pinned, %d not found here, %d labelled otherwise here",
            pinning.path,
            pinning.listed,
            len(pinning.pinned),
            len(pinning.missing),
            len(pinning.label_differs),
        )
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
