"""Real TFRecord shards + manifest, laid out by the test, whose images say which record they are.

Each record's image is a lossless PNG whose first two pixels hold the record's id (id // 256,
id % 256), so a test can read back exactly which records a pipeline produced, in what order,
from the decoded batches alone. Records are written with the project's own schema
(hpml.shards.schema.example_bytes): these are ordinary shards, only their layout is chosen.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from hpml.core.config import CLASSES
from hpml.core.files import file_sha256
from hpml.shards.manifest import SCHEMA_VERSION
from hpml.shards.schema import example_bytes

SIZE = 16


def image_id(img: np.ndarray) -> int:
    return int(img[0, 0, 0]) * 256 + int(img[0, 1, 0])


def _png(record_id: int, label: int, size: int) -> bytes:
    img = np.full((size, size), 60 * label + 20, np.uint8)  # the class is the gray level: learnable
    img[0, 0], img[0, 1] = record_id // 256, record_id % 256
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def write_shards(
    out: Path, layout: dict[str, list[int]], labels_in_manifest: bool = True, size: int = SIZE
) -> dict[int, int]:
    """layout: shard file name (e.g. 'train-00000-00000.tfrecord') -> class index per record.

    Returns {record id: label}. Ids are given in layout order across all shards.
    """
    out.mkdir(parents=True, exist_ok=True)
    shards, labels_of, next_id = [], {}, 0
    for name, labels in layout.items():
        split = name.split("-")[0]
        with tf.io.TFRecordWriter(str(out / name)) as writer:
            for label in labels:
                fields = {
                    "image": _png(next_id, label, size),
                    "label": label,
                    "label_name": CLASSES[label],
                    "patient": f"p{next_id}",
                    "source": "made",
                    "filename": f"img{next_id}.png",
                    "height": size,
                    "width": size,
                    "sha256": f"{next_id:064x}",
                }
                writer.write(example_bytes(fields))
                labels_of[next_id] = label
                next_id += 1
        entry = {
            "file": name,
            "split": split,
            "rank": int(name.split("-")[1]),
            "count": len(labels),
            "classes": {CLASSES[c]: n for c, n in sorted(Counter(labels).items())},
            "bytes": (out / name).stat().st_size,
            "sha256": file_sha256(out / name),
        }
        if labels_in_manifest:
            entry["labels"] = "".join(map(str, labels))
        shards.append(entry)
    totals = {}
    for split in sorted({s["split"] for s in shards}):
        mine = [s for s in shards if s["split"] == split]
        totals[split] = {
            "count": sum(s["count"] for s in mine),
            "shards": len(mine),
            "classes": {c: sum(s["classes"].get(c, 0) for s in mine) for c in CLASSES},
        }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "config_hash": "made-by-test",
        "settings": {"image_size": size},
        "shards": shards,
        "skipped": [],
        "totals": totals,
        "splits": sorted(totals),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return labels_of
