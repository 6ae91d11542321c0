"""A shard folder read and checked once, then handed down as a value.

`ShardSet.open(folder)` reads manifest.json once; training, validation, evaluation, staging
and the benchmarks take the `ShardSet` and never re-read the manifest from disk. Staging to
node-local storage gives a new `ShardSet` (same manifest, another folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpml.shards.manifest import MANIFEST, load_manifest


@dataclass(frozen=True)
class ShardSet:
    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | os.PathLike) -> ShardSet:
        return cls(Path(root), load_manifest(root))

    def at(self, root: Path) -> ShardSet:
        """The same shards in another folder (a verified copy: node-local staging)."""
        return ShardSet(Path(root), self.manifest)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def image_size(self) -> int:
        return int(self.manifest["settings"]["image_size"])

    def entries(self, *splits: str) -> list[dict[str, Any]]:
        """Manifest entries of the shards of `splits`, in manifest order."""
        return [s for s in self.manifest["shards"] if s["split"] in splits]

    def files(self, split: str) -> list[str]:
        """Paths of the split's shards, sorted (the order every rank agrees on)."""
        return sorted(str(self.root / s["file"]) for s in self.entries(split))
