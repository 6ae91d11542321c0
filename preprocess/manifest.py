"""manifest.json and the run report: what rank 0 writes once every rank's shards are done.

The manifest is deterministic (same inputs and settings -> same bytes); timings and the
per-rank table go to the report beside it. Per shard it lists the label of every record in
record order (`labels`, one digit per record), which is what lets training split each class
exactly over the ranks without reading the shards first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hpml.core.config import CLASSES
from hpml.core.files import write_json_atomic
from hpml.core.world import World
from hpml.shards.manifest import JOURNAL, MANIFEST, SCHEMA_VERSION
from preprocess.shard_writer import OPEN, temporary

REPORT = "preprocess-report.json"
SHARD_KEYS = ("file", "split", "rank", "count", "classes", "bytes", "sha256", "labels")


def write_manifest(
    settings: dict[str, Any], split_dir: Path, out: Path, chash: str, splits: list[str], results: list[dict[str, Any]]
) -> dict[str, Any]:
    entries = sorted((e for r in results for e in r["entries"]), key=lambda e: e["file"])
    shards = [{k: e[k] for k in SHARD_KEYS if k in e} for e in entries]
    skipped = sorted(({"split": e["split"], **s} for e in entries for s in e["skipped"]), key=lambda s: s["item"])
    totals: dict[str, Any] = {}
    for split in splits:
        mine = [e for e in entries if e["split"] == split]
        classes = {c: sum(e["classes"].get(c, 0) for e in mine) for c in CLASSES}
        totals[split] = {
            "count": sum(e["count"] for e in mine),
            "classes": classes,
            "bytes": sum(e["bytes"] for e in mine),
            "shards": len(mine),
            "skipped": sum(len(e["skipped"]) for e in mine),
        }
    changed = sorted((c for r in results for c in r.get("changed", [])), key=lambda c: c["item"])
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "config_hash": chash,
        "settings": settings,
        "split_dir": str(split_dir.resolve()),
        "splits": splits,
        "ranks": len(results),
        "shards": shards,
        "skipped": skipped,
        "changed_sources": changed,
        "totals": totals,
    }
    write_json_atomic(out / MANIFEST, manifest)
    remove_own(out, keep={e["file"] for e in entries})
    return manifest


def remove_own(out: Path, keep: set[str] = frozenset()) -> None:
    """Delete the shards the journal lists, except `keep`, and the partial shards it marks.

    Only what the journal says preprocessing wrote: shards of an earlier run with another rank
    count or other settings, temporary shards of a killed run. Nothing else in `out` is touched.
    """
    journal = out / JOURNAL
    for entry in sorted(journal.glob("*.json")):
        name = entry.name[: -len(".json")]
        if name not in keep:
            (out / name).unlink(missing_ok=True)
            entry.unlink()
    for mark in sorted(journal.glob(f"*{OPEN}")):
        partial = temporary(out, mark.name[: -len(OPEN)])
        if not partial.is_symlink() and partial.is_file():
            partial.unlink()
        mark.unlink()


def summarise(results: list[dict[str, Any]], seconds: float, manifest: dict[str, Any], world: World, out: Path) -> None:
    stats = [r["stats"] for r in results]
    images = sum(s["images"] for s in stats)
    # Timings change every run, so they live beside the (deterministic) manifest, not in it.
    report = {
        "ranks": world.size,
        "seconds": seconds,
        "images": images,
        "per_rank": stats,
        "images_per_second": images / max(seconds, 1e-9),
        "skipped": len(manifest["skipped"]),
        "changed_sources": len(manifest["changed_sources"]),
    }
    write_json_atomic(out / REPORT, report)
    lines = [f"{'rank':>4} {'images':>7} {'skipped':>7} {'reused':>6} {'MB in':>8} {'MB out':>7} {'img/s':>7}"]
    for s in stats:
        rate = s["images"] / s["seconds"] if s["seconds"] > 0 else 0.0
        lines.append(
            f"{s['rank']:>4} {s['images']:>7} {s['skipped']:>7} {s['reused']:>6} "
            f"{s['bytes_in'] / 1e6:>8.1f} {s['bytes_out'] / 1e6:>7.1f} {rate:>7.1f}"
        )
    print("\n".join(lines))
    counts = ", ".join(f"{k}: {v['count']}" for k, v in manifest["totals"].items())
    print(
        f"preprocess: {images} images encoded in {seconds:.1f}s ({images / max(seconds, 1e-9):.1f} img/s "
        f"over {world.size} rank(s)); skipped {len(manifest['skipped'])}; "
        f"records {counts}; {len(manifest['shards'])} shards"
    )
    if manifest["changed_sources"]:
        first = ", ".join(c["path"] for c in manifest["changed_sources"][:3])
        print(
            f"preprocess: warning: {len(manifest['changed_sources'])} source file(s) differ from the sha256 "
            f"in split.json (changed since the split was built): {first} (all in {out / MANIFEST})"
        )
    sys.stdout.flush()
