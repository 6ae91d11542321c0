"""Perceptual fingerprints: the same radiograph stored as different bytes is found again.

Copies of one film circulate between the COVIDx sources re-encoded (JPEG <-> PNG, other quality,
other size, padded; COVID-Net issue 70). sha256 cannot see that, so every image is decoded
(downscaled by libjpeg itself for JPEGs: ~4x less work), uniform padding is trimmed, and two
things are kept: a 64-bit DCT hash (pHash: the signs of the 8x8 lowest frequencies of a 32x32
thumbnail against their median) and a 16x16 thumbnail. Pairs within `MAX_BITS` Hamming bits are
candidates; a candidate is a duplicate only when the thumbnails also correlate >= `MIN_CORR`,
because chest films all look alike at 8x8 frequencies.

Cost at COVIDx scale is the decoding: it runs in a process pool, and fingerprints are cached by
the file's sha256 (`~/.cache/hpml/phash-v1.npz`), so a rebuild decodes only new files.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from hpml.imaging import ImageError, decode_gray, read_bytes, sniff

log = logging.getLogger(__name__)

MAX_BITS = 10
MIN_CORR = 0.98  # measured: distinct real films <= 0.944, synthetic <= 0.972, re-encoded copies >= 0.989
THUMB = 16
VERSION = 1
Fingerprint = tuple[int, np.ndarray]  # (64-bit hash, THUMB x THUMB uint8)


def default_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hpml" / f"phash-v{VERSION}.npz"


def _flat(lines: np.ndarray, tolerance: int) -> np.ndarray:
    """Rows of black or white padding: near 0 or 255 and nearly constant (JPEG rings a little)."""
    med = np.median(lines, axis=1)
    near = np.abs(lines.astype(np.int16) - med[:, None].astype(np.int16)) <= tolerance
    return ((med <= 16) | (med >= 239)) & (near.mean(axis=1) >= 0.98)


def _trim_uniform_border(img: np.ndarray, tolerance: int = 6) -> np.ndarray:
    """Drop edge rows/columns of padding, at most a quarter per side (grey film edges stay)."""
    h, w = img.shape
    flat_rows, flat_cols = _flat(img, tolerance), _flat(img.T, tolerance)

    def run(flags: np.ndarray, limit: int) -> int:
        n = 0
        while n < limit and flags[n]:
            n += 1
        return n

    top, bottom = run(flat_rows, h // 4), run(flat_rows[::-1], h // 4)
    left, right = run(flat_cols, w // 4), run(flat_cols[::-1], w // 4)
    return img[top : h - bottom, left : w - right]


def fingerprint(gray: np.ndarray) -> Fingerprint:
    img = _trim_uniform_border(gray)
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term says only "how bright"
    value = int(np.packbits(bits).view(">u8")[0])
    thumb = cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return value, thumb


def decode_for_hash(path: str | os.PathLike) -> np.ndarray:
    data = read_bytes(path)
    if sniff(data[:132], path) == "jpeg":  # libjpeg decodes at 1/4 scale directly
        flags = cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_IGNORE_ORIENTATION
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if img is not None and min(img.shape) >= 8:
            return img
    return decode_gray(data, path)


def _fingerprint_file(path: str) -> Fingerprint | str:
    try:
        return fingerprint(decode_for_hash(path))
    except ImageError as exc:
        return exc.reason
    except Exception as exc:  # a decoder crash on one file must not end the build
        return f"cannot decode: {exc}"


def fingerprints(items: list[tuple[Path, str]], cache: Path | None, workers: int = 0) -> dict[str, Fingerprint | str]:
    """{sha256: fingerprint or the reason it failed} for (path, sha256) items."""
    known = _load(cache) if cache else {}
    todo = {sha: path for path, sha in items if sha not in known}
    workers = workers or min(8, len(os.sched_getaffinity(0)))
    log.info("fingerprints: %d cached, %d to decode on %d process(es)", len(items) - len(todo), len(todo), workers)
    paths = [str(p) for p in todo.values()]
    if len(paths) < 32 or workers == 1:  # a pool costs more than it saves
        done = [_fingerprint_file(p) for p in paths]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(_fingerprint_file, paths, chunksize=16))
    fresh = dict(zip(todo, done, strict=True))
    if cache and any(not isinstance(v, str) for v in fresh.values()):
        _save(cache, known | {k: v for k, v in fresh.items() if not isinstance(v, str)})
    return {sha: known.get(sha) or fresh[sha] for _, sha in items}


def _load(cache: Path) -> dict[str, Fingerprint]:
    try:
        with np.load(cache) as z:
            return {s: (int(h), t) for s, h, t in zip(z["sha"].tolist(), z["hash"], z["thumb"], strict=True)}
    except FileNotFoundError:
        return {}
    except Exception as exc:  # a damaged cache is only a cache
        log.warning("ignoring fingerprint cache %s: %s", cache, exc)
        return {}


def _save(cache: Path, table: dict[str, Fingerprint]) -> None:
    import io

    shas = sorted(table)
    buf = io.BytesIO()
    np.savez(
        buf,
        sha=np.array(shas),
        hash=np.array([table[s][0] for s in shas], np.uint64),
        thumb=np.stack([table[s][1] for s in shas]),
    )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")  # two builds at once: last one wins
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, cache)
    except OSError as exc:
        log.warning("fingerprint cache %s not written (%s); the next build decodes again", cache, exc)


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def _unit(thumbs: np.ndarray) -> np.ndarray:
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    flat -= flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norm, 1e-6)


def duplicate_pairs(prints: list[Fingerprint], max_bits: int = MAX_BITS, min_corr: float = MIN_CORR):
    """Index pairs (i < j) of the same picture: close hashes AND correlated thumbnails."""
    if len(prints) < 2:
        return []
    hashes = np.array([p[0] for p in prints], np.uint64)
    unit = _unit(np.stack([p[1] for p in prints]))
    pairs = []
    block = 256
    with np.errstate(over="ignore"):
        for start in range(0, len(hashes), block):
            rows = hashes[start : start + block, None]
            close = _popcount(rows ^ hashes[None, start:]) <= max_bits  # upper triangle only
            for i, j in zip(*np.nonzero(close), strict=True):
                i, j = i + start, j + start
                if i < j and float(unit[i] @ unit[j]) >= min_corr:
                    pairs.append((int(i), int(j)))
    return pairs
