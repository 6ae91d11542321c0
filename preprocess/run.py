"""`hpml preprocess`: split files -> model-sized TFRecord shards + manifest, on N MPI ranks.

Rank 0 reads the split, takes the output folder (OUT/.lock, hpml.core.exclusive: a second job
on the same --out is refused, naming the holder), checks it, makes the plan and broadcasts it. Each
rank decodes its byte-balanced share and writes its own shards. A bad image is skipped and
recorded; anything else that goes wrong on any rank ends every rank under the collective
failure rule (hpml.core.failure). Rank 0 gathers the shard entries and writes manifest.json
atomically, then the report; when more than `preprocess.max_skipped` of the images could not
be used the job fails after writing them, so the user sees what was lost. Preprocessing deletes
only what its journal says it wrote; any other file in --out is left alone, and one at a name it
must write stops the job, named.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from hpml.core import exclusive
from hpml.core.config import CLASSES, Config
from hpml.core.errors import UsageError
from hpml.core.failure import at, phase
from hpml.core.provenance import append, record
from hpml.core.runfiles import PROVENANCE
from hpml.imaging import ImageError, decode_gray, encode, fit_square, read_bytes
from hpml.parallel.mpi import mpi_comm, mpi_world
from hpml.shards.manifest import JOURNAL, MANIFEST, SCHEMA_VERSION
from hpml.shards.schema import example_bytes
from preprocess.job_progress import JobProgress
from preprocess.manifest import REPORT, remove_own, summarise, write_manifest
from preprocess.plan import Item, assign, read_items
from preprocess.shard_writer import OutputCollision, ShardWriter, foreign

LOCK = ".lock"  # OUT/.lock: the one preprocessing job writing this folder

log = logging.getLogger(__name__)


class PreprocessError(UsageError):
    """The job cannot start (bad inputs, output folder, config mismatch)."""


def settings(cfg: Config) -> dict[str, Any]:
    """Everything that decides the bytes of a shard: the config hash covers these."""
    p = cfg.preprocess
    return {
        "image_size": cfg.data.image_size,
        "policy": p.policy,
        "top_crop": p.top_crop,
        "encoding": p.encoding,
        "jpeg_quality": p.jpeg_quality,
        "shard_mb": p.shard_mb,
        "compression": p.compression,
    }


def _config_hash(cfg: Config, split_dir: Path, splits: list[str]) -> str:
    # The rank count is not part of it: another rank count rewrites shards, it does not conflict.
    blob = {"settings": settings(cfg), "splits": splits, "schema": SCHEMA_VERSION}
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode())
    for split in splits:
        digest.update((split_dir / f"{split}.txt").read_bytes())
    return digest.hexdigest()


def _prepare(cfg: Config, split_dir: Path, out: Path, force: bool, ranks: int):
    """Rank 0: validate, take --out, clear on --force, plan. Returns (config hash, splits, shares)."""
    with phase("read_split"):
        splits = [s for s in cfg.data.splits if (split_dir / f"{s}.txt").is_file()]
        if not splits:
            raise PreprocessError(f"{split_dir}: no split files ({', '.join(cfg.data.splits)}.txt)")
        items = read_items(split_dir, splits)
        if not items:
            raise PreprocessError(f"{split_dir}: the split files list no images")
    with phase("plan"):
        chash = _config_hash(cfg, split_dir, splits)
        _take(out)
        try:
            _check_owned(out)
            old = _existing_hash(out)
            if old not in (None, chash):
                if not force:
                    raise PreprocessError(
                        f"{out} holds shards made with other settings or inputs; refusing to mix them. "
                        "Use another --out, or --force to delete them and start again."
                    )
                log.warning("--force: deleting the old shards in %s", out)
                remove_own(out)
                (out / MANIFEST).unlink(missing_ok=True)
            _check_collisions(out, splits, ranks, cfg.preprocess.compression == "gzip")
            return chash, splits, assign(items, ranks)
        except BaseException:
            exclusive.release(out / LOCK)  # no rank has written anything yet
            raise


def _take(out: Path) -> None:
    """Rank 0: hold OUT/.lock for the whole job; a second job on the same --out is refused."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        exclusive.acquire(out / LOCK)
        (out / JOURNAL).mkdir(exist_ok=True)
    except exclusive.Locked as exc:
        raise PreprocessError(
            f"{out} is being written by another `hpml preprocess`: {exc.who()}. Wait for it to end "
            f"or use another --out. If that process is gone for good, remove {exc.path}."
        ) from None
    except OSError as exc:
        raise PreprocessError(f"output folder {out} is not writable: {exc.strerror or exc}") from None


def _check_owned(out: Path) -> None:
    """manifest.json and the report are preprocessing's names: refuse to replace another's file."""
    for path, key in ((out / MANIFEST, "config_hash"), (out / REPORT, "per_rank")):
        if not os.path.lexists(path):
            continue
        try:
            ours = key in json.loads(path.read_text(encoding="utf-8")) and not path.is_symlink()
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise OutputCollision(path)


def _check_collisions(out: Path, splits: list[str], ranks: int, gzip: bool) -> None:
    """Before any rank starts: a file at a shard name this job may write (or its temporary name)
    that the journal does not list."""
    ext = r"\.tfrecord\.gz" if gzip else r"\.tfrecord"
    shard = re.compile(rf"(?:{'|'.join(map(re.escape, splits))})-(\d{{5}})-\d{{5}}{ext}")
    for path in sorted(out.iterdir()):
        hidden = path.name.startswith(".") and path.name.endswith(".tmp")
        name = path.name[1:-4] if hidden else path.name
        match = shard.fullmatch(name)
        if match and int(match[1]) < ranks and (in_the_way := foreign(out, name)) is not None:
            raise OutputCollision(in_the_way)


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


def _record(item: Item, cfg: Config) -> tuple[bytes, int, str]:
    """Decode, crop/resize, encode one image -> (record, bytes read, sha256 of the file).

    Raises ImageError for a bad image; `transient` on it says a rerun may succeed.
    """
    try:
        data = read_bytes(item.path)
    except ImageError as exc:
        exc.transient = True  # not found, I/O error: a mount or a copy may be fixed
        raise
    try:
        gray = decode_gray(data, item.path)
        img = fit_square(gray, cfg.data.image_size, cfg.preprocess.policy, cfg.preprocess.top_crop)
    except ImageError:
        raise
    except Exception as exc:  # any decoder failure is this image's problem, not the job's
        raise ImageError(item.path, f"decode failed: {type(exc).__name__}: {exc}") from None
    encoded = encode(img, cfg.preprocess.encoding, cfg.preprocess.jpeg_quality)
    digest = hashlib.sha256(data).hexdigest()
    fields = {
        "image": encoded,
        "label": CLASSES.index(item.label),
        "label_name": item.label,
        "patient": item.patient,
        "source": item.source,
        "filename": item.filename,
        "height": gray.shape[0],
        "width": gray.shape[1],
        "sha256": digest,
    }
    return example_bytes(fields), len(data), digest


def _process_share(share, cfg, out, chash, world, progress) -> dict[str, Any]:
    start = time.monotonic()
    stats = {"rank": world.rank, "images": 0, "skipped": 0, "reused": 0, "bytes_in": 0, "bytes_out": 0}
    entries, changed = [], []
    limit = int(cfg.preprocess.shard_mb * 1e6)
    gzip = cfg.preprocess.compression == "gzip"
    for split in sorted({it.split for it in share}):
        items = [it for it in share if it.split == split]
        writer = ShardWriter(out, split, world.rank, limit, gzip, chash)
        done = writer.resume(items)
        if done:
            progress.tick(done)
        for item in items[done:]:
            at("encode")
            try:
                record, size_in, digest = _record(item, cfg)
            except ImageError as exc:
                log.debug("skipping %s: %s", item.path, exc.reason)
                writer.skip(item, exc.reason, world.rank, transient=getattr(exc, "transient", False))
                stats["skipped"] += 1
            else:
                if item.sha256 and digest != item.sha256:
                    changed.append({"item": f"{item.source}/{item.filename}", "path": item.path})
                writer.add(item, record)
                stats["images"] += 1
                stats["bytes_in"] += size_in
            progress.tick()
        writer.close_shard()
        stats["reused"] += writer.reused
        entries.extend(writer.entries)
    stats["bytes_out"] = sum(e["bytes"] for e in entries)
    stats["seconds"] = time.monotonic() - start
    return {"stats": stats, "entries": entries, "changed": changed}


def run(cfg: Config, split_dir: Path, out: Path, force: bool = False) -> int:
    comm = mpi_comm()
    world = mpi_world()
    plan = _prepare(cfg, split_dir, out, force, world.size) if world.is_root else None
    with phase("share"):
        chash, splits, shares = comm.bcast(plan, root=0)
    share = shares[world.rank]
    total = sum(len(s) for s in shares)
    share_mb = sum(max(i.size, 0) for i in share) / 1e6
    log.info(
        "%d images in %s over %d rank(s); this rank: %d images, %.1f MB",
        total,
        "/".join(splits),
        world.size,
        len(share),
        share_mb,
    )
    import tensorflow  # noqa: F401  (the record writer's import, kept out of the timings)

    t0 = time.monotonic()
    progress = JobProgress(comm, world, total, "preprocess")
    with phase("write"):
        result = _process_share(share, cfg, out, chash, world, progress)
    with phase("gather"):
        progress.finish()
        results = comm.gather(result, root=0)
    if world.is_root:
        try:
            with phase("manifest"):
                manifest = write_manifest(settings(cfg), split_dir, out, chash, splits, results)
            with phase("report"):
                summarise(results, time.monotonic() - t0, manifest, world, out)
                append(out / PROVENANCE, record("preprocess"))  # OUT/provenance.jsonl: one line per run
                _check_losses(manifest, total, cfg.preprocess.max_skipped, out)
        finally:  # every rank's shards are done (gathered); a job that died before keeps a stale lock
            exclusive.release(out / LOCK)
    comm.Barrier()
    return 0


def _check_losses(manifest: dict[str, Any], total: int, max_skipped: float, out: Path) -> None:
    """Fail (after the manifest and report are written) when too many images were unusable."""
    skipped = manifest["skipped"]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for s in skipped:
        by_reason[s["reason"].split(": ")[0].split(" (")[0]].append(s["path"])
    for reason, paths in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(paths[:3]) + (f", ... ({len(paths) - 3} more)" if len(paths) > 3 else "")
        log.warning("skipped %d image(s): %s: %s", len(paths), reason, shown)
    if skipped:
        log.warning('every skipped image, with its reason: %s ("skipped")', out / MANIFEST)
    if total and len(skipped) / total > max_skipped:
        raise PreprocessError(
            f"{len(skipped)} of {total} images ({len(skipped) / total:.1%}) could not be used, more than "
            f"preprocess.max_skipped={max_skipped:g}; the shards and {out / MANIFEST} list them. Fix the "
            "sources and rerun (images skipped as missing or unreadable are retried), or raise "
            "preprocess.max_skipped to accept the loss."
        )
