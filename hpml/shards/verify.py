"""`hpml shards verify`: trust nothing, recompute everything the manifest claims."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hpml.core.config import CLASSES
from hpml.core.files import file_sha256
from hpml.shards.manifest import load_manifest
from hpml.shards.schema import compression_of, parse_fn


def verify(shard_dir: Path) -> list[str]:
    """Returns the problems found (empty: all good). Parses and decodes every record."""
    import tensorflow as tf

    manifest = load_manifest(shard_dir)
    size = manifest["settings"]["image_size"]
    parse = parse_fn()
    problems = []
    listed = {s["file"] for s in manifest["shards"]}
    for extra in sorted(p.name for p in shard_dir.glob("*.tfrecord*") if p.name not in listed):
        problems.append(f"{extra}: shard file not in the manifest")
    for shard in manifest["shards"]:
        path = shard_dir / shard["file"]
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
            continue
        if path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: checksum or size differs from the manifest")
            continue
        classes: Counter[str] = Counter()
        count = 0
        try:
            for raw in tf.data.TFRecordDataset(str(path), compression_type=compression_of(shard["file"])):
                rec = parse(raw)
                image = tf.io.decode_image(rec["image"], channels=1, expand_animations=False)
                name = rec["label_name"].numpy().decode()
                if tuple(image.shape) != (size, size, 1):
                    problems.append(f"{shard['file']} record {count}: image shape {tuple(image.shape)}")
                if CLASSES[int(rec["label"])] != name:
                    problems.append(f"{shard['file']} record {count}: label index/name disagree")
                classes[name] += 1
                count += 1
        except tf.errors.OpError as exc:
            problems.append(f"{shard['file']}: unreadable after record {count}: {exc.message}")
            continue
        if count != shard["count"] or dict(classes) != {k: v for k, v in shard["classes"].items() if v}:
            problems.append(
                f"{shard['file']}: {count} records {dict(classes)}, manifest says "
                f"{shard['count']} {shard['classes']}"
            )
    return problems
