"""The shard contract between preprocessing and training: the record schema and shard names.

Write side (`example_bytes`) and parse side (`parse_fn`) live together so they cannot drift.
Images are stored as single-channel encoded JPEG/PNG at model size; decoding and the one
channel replication happen in the reader (hpml.train.data), for training and prediction alike.
"""

from __future__ import annotations

from typing import Any

from hpml.core.config import CLASSES

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
