"""manifest.json: what a shard folder holds, as preprocessing wrote it (the read side).

Rank 0 of `hpml preprocess` writes it (preprocess.manifest); everything downstream reads it
through `load_manifest` or, once per stage, as a `ShardSet` (hpml.shards.shardset).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hpml.core.errors import UsageError

MANIFEST = "manifest.json"
JOURNAL = ".journal"  # per-shard entries written as shards complete: what makes reruns resume
SCHEMA_VERSION = 1


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
