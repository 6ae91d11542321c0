"""The shard contract between preprocessing and training: record schema, names, manifest.

Write side (`example_bytes`) and parse side (`parse_fn`) live together so they cannot drift.
Images are stored as single-channel encoded JPEG/PNG at model size; decoding and the one
channel replication happen in the reader (hpml.data), for training and prediction alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hpml.config import CLASSES
from hpml.failure import UsageError

MANIFEST = "manifest.json"
JOURNAL = ".journal"  # per-shard entries written as shards complete: what makes reruns resume
SCHEMA_VERSION = 1

# name -> (kind, description). kinds: bytes | int
FIELDS: dict[str, tuple[str, str]] = {
    "image": ("bytes", "encoded single-channel JPEG or PNG, size x size"),
    "label": ("int", f"class index into {list(CLASSES)}"),
    "label_name": ("bytes", "class name"),
    "patient": ("bytes", "patient id (unique within its source)"),
    "source": ("bytes", "source data set name"),
    "filename": ("bytes", "file name relative to the source root"),
    "height": ("int", "original image height in pixels"),
    "width": ("int", "original image width in pixels"),
    "sha256": ("bytes", "sha256 of the original file"),
}


def shard_name(split: str, rank: int, index: int, gzip: bool = False) -> str:
    return f"{split}-{rank:05d}-{index:05d}.tfrecord" + (".gz" if gzip else "")


def compression_of(shard: str) -> str:
    """TFRecord compression type of a shard, from its name (see shard_name)."""
    return "GZIP" if str(shard).endswith(".gz") else ""


def example_bytes(fields: dict[str, Any]) -> bytes:
    """Serialise one record; `fields` must hold exactly the keys of FIELDS."""
    import tensorflow as tf

    if set(fields) != set(FIELDS):
        raise ValueError(f"record fields {sorted(fields)} != schema {sorted(FIELDS)}")
    feature = {}
    for name, (kind, _) in FIELDS.items():
        value = fields[name]
        if kind == "int":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_fn():
    """A function mapping a serialized record to a dict of tensors (for tf.data.map)."""
    import tensorflow as tf

    spec = {
        name: tf.io.FixedLenFeature([], tf.int64 if kind == "int" else tf.string) for name, (kind, _) in FIELDS.items()
    }

    def parse(serialized):
        return tf.io.parse_single_example(serialized, spec)

    return parse


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, fsync, rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no stray half file behind
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


class ManifestError(UsageError):
    """A shard folder without a usable manifest."""


class ShardError(ManifestError):
    """A shard that is missing, damaged or differs from its manifest entry."""


def load_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(shard_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (run `hpml preprocess` first)") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return manifest
