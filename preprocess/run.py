"""`hpml preprocess`: split files -> model-sized TFRecord shards + manifest, on N MPI ranks.

Rank 0 checks the inputs and the output folder and makes the plan; the verdict is broadcast,
so a bad path stops every rank with the same message instead of hanging them. Each rank then
decodes its byte-balanced share and writes its own shards. A bad image is skipped and
recorded; an error that prevents writing aborts the whole MPI job at once (MPI_Abort).
Rank 0 gathers the shard entries and writes manifest.json atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hpml.config import CLASSES, Config
from hpml.imaging import ImageError, decode_gray, encode, fit_square, read_bytes
from hpml.records import JOURNAL, MANIFEST, SCHEMA_VERSION, example_bytes, write_json_atomic
from hpml.world import World, mpi_comm, mpi_world
from preprocess.job_progress import JobProgress
from preprocess.plan import Item, assign, read_items
from preprocess.shard_writer import ShardWriter

log = logging.getLogger(__name__)
ABORT_CODE = 3
REPORT = "preprocess-report.json"


class PreprocessError(Exception):
    """The job cannot start (bad inputs, output folder, config mismatch)."""


def settings(cfg: Config) -> dict[str, Any]:
    """Everything that decides the bytes of a shard: the config hash covers these."""
    p = cfg.preprocess
    return {"image_size": cfg.data.image_size, "policy": p.policy, "top_crop": p.top_crop,
            "encoding": p.encoding, "jpeg_quality": p.jpeg_quality, "shard_mb": p.shard_mb,
            "compression": p.compression}  # fmt: skip


def _config_hash(cfg: Config, split_dir: Path, splits: list[str]) -> str:
    # The rank count is not part of it: another rank count rewrites shards, it does not conflict.
    blob = {"settings": settings(cfg), "splits": splits, "schema": SCHEMA_VERSION}
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode())
    for split in splits:
        digest.update((split_dir / f"{split}.txt").read_bytes())
    return digest.hexdigest()


def _prepare(cfg: Config, split_dir: Path, out: Path, force: bool, ranks: int):
    """Rank 0: validate, clear on --force, plan. Returns (config hash, shares)."""
    splits = [s for s in cfg.data.splits if (split_dir / f"{s}.txt").is_file()]
    if not splits:
        raise PreprocessError(f"{split_dir}: no split files ({', '.join(cfg.data.splits)}.txt)")
    items = read_items(split_dir, splits)
    if not items:
        raise PreprocessError(f"{split_dir}: the split files list no images")
    chash = _config_hash(cfg, split_dir, splits)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / JOURNAL).mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise PreprocessError(f"output folder {out} is not writable: {exc.strerror or exc}") from None
    old = _existing_hash(out)
    if old not in (None, chash):
        if not force:
            raise PreprocessError(
                f"{out} holds shards made with other settings or inputs; refusing to mix them. "
                "Use another --out, or --force to delete them and start again."
            )
        log.warning("--force: deleting the old shards in %s", out)
        for path in [*out.glob("*.tfrecord*"), out / MANIFEST]:
            path.unlink(missing_ok=True)
        shutil.rmtree(out / JOURNAL, ignore_errors=True)
        (out / JOURNAL).mkdir()
    return chash, splits, assign(items, ranks)


def _existing_hash(out: Path) -> str | None:
    try:
        return json.loads((out / MANIFEST).read_text())["config_hash"]
    except (OSError, ValueError, KeyError):
        pass
    for entry in sorted((out / JOURNAL).glob("*.json")):
        try:
            return json.loads(entry.read_text())["config_hash"]
        except (OSError, ValueError, KeyError):
            continue
    return None


def _record(item: Item, cfg: Config) -> tuple[bytes, int]:
    """Decode, crop/resize, encode one image. Raises ImageError for a bad image."""
    data = read_bytes(item.path)
    try:
        gray = decode_gray(data, item.path)
        img = fit_square(gray, cfg.data.image_size, cfg.preprocess.policy, cfg.preprocess.top_crop)
    except ImageError:
        raise
    except Exception as exc:  # any decoder failure is this image's problem, not the job's
        raise ImageError(item.path, f"decode failed: {type(exc).__name__}: {exc}") from None
    encoded = encode(img, cfg.preprocess.encoding, cfg.preprocess.jpeg_quality)
    fields = {"image": encoded, "label": CLASSES.index(item.label), "label_name": item.label,
              "patient": item.patient, "source": item.source, "filename": item.filename,
              "height": gray.shape[0], "width": gray.shape[1],
              "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    return example_bytes(fields), len(data)


def _process_share(share, cfg, out, chash, world, progress) -> dict[str, Any]:
    start = time.monotonic()
    stats = {"rank": world.rank, "images": 0, "skipped": 0, "reused": 0, "bytes_in": 0, "bytes_out": 0}
    entries = []
    limit = int(cfg.preprocess.shard_mb * 1e6)
    gzip = cfg.preprocess.compression == "gzip"
    for split in sorted({it.split for it in share}):
        items = [it for it in share if it.split == split]
        writer = ShardWriter(out, split, world.rank, limit, gzip, chash)
        done = writer.resume(items)
        if done:
            progress.tick(done)
        for item in items[done:]:
            try:
                record, size_in = _record(item, cfg)
            except ImageError as exc:
                log.warning("skipping %s: %s", item.path, exc.reason)
                writer.skip(item, exc.reason, world.rank)
                stats["skipped"] += 1
            else:
                writer.add(item, record)
                stats["images"] += 1
                stats["bytes_in"] += size_in
            progress.tick()
        writer.close_shard()
        stats["reused"] += writer.reused
        entries.extend(writer.entries)
    stats["bytes_out"] = sum(e["bytes"] for e in entries)
    stats["seconds"] = time.monotonic() - start
    return {"stats": stats, "entries": entries}


def run(cfg: Config, split_dir: Path, out: Path, force: bool = False) -> int:
    comm = mpi_comm()
    world = mpi_world()
    verdict: Any
    if world.is_root:
        try:
            verdict = _prepare(cfg, split_dir, out, force, world.size)
        except (PreprocessError, OSError, ValueError) as exc:
            verdict = PreprocessError(str(exc))
    else:
        verdict = None
    verdict = comm.bcast(verdict, root=0)
    if isinstance(verdict, Exception):
        raise verdict
    chash, splits, shares = verdict
    share = shares[world.rank]
    total = sum(len(s) for s in shares)
    share_mb = sum(max(i.size, 0) for i in share) / 1e6
    log.info("%d images in %s over %d rank(s); this rank: %d images, %.1f MB",
             total, "/".join(splits), world.size, len(share), share_mb)  # fmt: skip
    import tensorflow  # noqa: F401  (the record writer's import, kept out of the timings)

    t0 = time.monotonic()
    progress = JobProgress(comm, world, total, "preprocess")
    try:
        result = _process_share(share, cfg, out, chash, world, progress)
    except Exception as exc:  # cannot write: nothing sensible to continue with on any rank
        log.critical("rank %d cannot continue: %s: %s; aborting all ranks", world.rank, type(exc).__name__, exc)
        sys.stderr.flush()
        comm.Abort(ABORT_CODE)
    progress.finish()
    results = comm.gather(result, root=0)
    if world.is_root:
        manifest = _write_manifest(cfg, split_dir, out, chash, splits, results)
        _summarise(results, time.monotonic() - t0, manifest, world, out)
    comm.Barrier()
    return 0


def _write_manifest(cfg, split_dir, out, chash, splits, results) -> dict[str, Any]:
    entries = sorted((e for r in results for e in r["entries"]), key=lambda e: e["file"])
    shards = [{k: e[k] for k in ("file", "split", "rank", "count", "classes", "bytes", "sha256")} for e in entries]
    skipped = sorted(({"split": e["split"], **s} for e in entries for s in e["skipped"]), key=lambda s: s["item"])
    totals: dict[str, Any] = {}
    for split in splits:
        mine = [e for e in entries if e["split"] == split]
        classes = {c: sum(e["classes"].get(c, 0) for e in mine) for c in CLASSES}
        totals[split] = {"count": sum(e["count"] for e in mine), "classes": classes,
                         "bytes": sum(e["bytes"] for e in mine), "shards": len(mine),
                         "skipped": sum(len(e["skipped"]) for e in mine)}  # fmt: skip
    manifest = {"schema_version": SCHEMA_VERSION, "config_hash": chash, "settings": settings(cfg),
                "split_dir": str(split_dir.resolve()), "splits": splits, "ranks": len(results),
                "shards": shards, "skipped": skipped, "totals": totals}  # fmt: skip
    write_json_atomic(out / MANIFEST, manifest)
    keep = {e["file"] for e in entries}
    for stale in out.glob("*.tfrecord*"):  # from an earlier run with another rank count
        if stale.name not in keep:
            stale.unlink()
            (out / JOURNAL / f"{stale.name}.json").unlink(missing_ok=True)
    for partial in out.glob(".*.tmp"):  # left by a killed run
        partial.unlink()
    return manifest


def _summarise(results, seconds: float, manifest: dict[str, Any], world: World, out: Path) -> None:
    stats = [r["stats"] for r in results]
    images = sum(s["images"] for s in stats)
    # Timings change every run, so they live beside the (deterministic) manifest, not in it.
    report = {"ranks": world.size, "seconds": seconds, "images": images, "per_rank": stats,
              "images_per_second": images / max(seconds, 1e-9),
              "skipped": len(manifest["skipped"])}  # fmt: skip
    write_json_atomic(out / REPORT, report)
    lines = [f"{'rank':>4} {'images':>7} {'skipped':>7} {'reused':>6} {'MB in':>8} {'MB out':>7} {'img/s':>7}"]
    for s in stats:
        rate = s["images"] / s["seconds"] if s["seconds"] > 0 else 0.0
        lines.append(f"{s['rank']:>4} {s['images']:>7} {s['skipped']:>7} {s['reused']:>6} "
                     f"{s['bytes_in'] / 1e6:>8.1f} {s['bytes_out'] / 1e6:>7.1f} {rate:>7.1f}")  # fmt: skip
    print("\n".join(lines))
    counts = ", ".join(f"{k}: {v['count']}" for k, v in manifest["totals"].items())
    print(f"preprocess: {images} images encoded in {seconds:.1f}s ({images / max(seconds, 1e-9):.1f} img/s "
          f"over {world.size} rank(s)); skipped {len(manifest['skipped'])}; "
          f"records {counts}; {len(manifest['shards'])} shards")  # fmt: skip
    sys.stdout.flush()
