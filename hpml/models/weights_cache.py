"""Keras ImageNet weights for the backbones: fetched and verified on a login node, read on compute nodes.

Compute nodes (SURF Snellius) have no internet, so Keras' own `weights="imagenet"` download cannot
run in a job. `hpml weights fetch BACKBONE` downloads the published "notop" file on a login node
into `cache_dir()`; `model.weights: imagenet` then names that file (`resolve`), never downloading.
On a cluster set HPML_WEIGHTS_DIR to shared project space, on the login node and in the job alike.

TABLE holds the file paths and hashes Keras 2.15 publishes (keras/src/applications/resnet.py,
mobilenet_v2.py, efficientnet.py). A hash of 32 hex digits is md5, of 64 sha256, the rule of
`keras.utils.get_file`. Keras publishes no hash for MobileNetV2 (mobilenet_v2.py calls get_file
without file_hash); we do not pretend to verify it: the file must arrive whole (as many bytes as the
server announced) and start with the HDF5 signature, and is reported UNVERIFIED with its sha256.

A download goes to `<name>.part` and is renamed to `<name>` only once verified, so the final name
always holds a verified file. A later fetch resumes a `.part` with an HTTP Range request (from zero
when the server ignores Range). Concurrent fetches into one cache take an exclusive flock on
`<name>.lock` (one fixed .part is what makes resuming possible); the second waits, then finds the
verified file. Where the file system refuses flock, fetch warns and goes on unlocked.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpml.core.errors import UsageError

log = logging.getLogger(__name__)
BASE_URL = "https://storage.googleapis.com/"  # + WeightsFile.path; a mirror keeps the same layout
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ATTEMPTS = 3  # a dropped connection is resumed this many times within one fetch
RETRY_DELAY_S = 1.0
TIMEOUT_S = 60.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsFile:
    path: str  # relative to the base URL, as Keras lays its files out
    hash: str | None  # md5 (32 hex) or sha256 (64 hex) as Keras publishes it; None: Keras publishes none

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


TABLE: dict[str, WeightsFile] = {
    # resnet.py: BASE_WEIGHTS_PATH ".../tensorflow/keras-applications/resnet/", WEIGHTS_HASHES["resnet50v2"][1]
    "resnet50v2": WeightsFile(
        "tensorflow/keras-applications/resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "fac2f116257151a9d068a22e544a4917",
    ),
    # mobilenet_v2.py: alpha 1.0, rows 224 (Keras' choice for any input size outside 96..224); no hash
    "mobilenetv2": WeightsFile(
        "tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        None,
    ),
    # efficientnet.py: BASE_WEIGHTS_PATH ".../keras-applications/" (no tensorflow/), WEIGHTS_HASHES["b4"][1]
    "efficientnetb4": WeightsFile("keras-applications/efficientnetb4_notop.h5", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
}
NO_IMAGENET = {
    "resnext50": "it is hpml's own Keras ResNeXt50-32x4d; Keras publishes no ImageNet file for it (its ImageNet "
    "weights are torchvision's, not available here; the 'resnext50' hash left in Keras' resnet.py belongs to "
    "no Keras model and to other layer names). Train it from scratch or give model.weights a local .h5",
    "tiny_cnn": "it is hpml's small CPU model and has no ImageNet weights",
}


class WeightsError(UsageError):
    """A backbone without ImageNet weights, a failed download or a file that fails its check."""


def cache_dir() -> Path:
    """$HPML_WEIGHTS_DIR, else ~/.cache/hpml/weights (on a cluster: shared project space)."""
    env = os.environ.get("HPML_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hpml" / "weights"


def entry(backbone: str, table: dict[str, WeightsFile] | None = None) -> WeightsFile:
    """The weights file of a backbone, or an error that says why there is none."""
    table = TABLE if table is None else table
    if backbone in table:
        return table[backbone]
    if backbone in NO_IMAGENET:
        raise WeightsError(f"{backbone}: no Keras ImageNet weights: {NO_IMAGENET[backbone]}")
    raise WeightsError(f"unknown backbone {backbone!r}: ImageNet weights exist for {', '.join(table)}")


def algorithm(hex_hash: str) -> str:
    """md5 for 32 hex digits, sha256 for 64: how keras.utils.get_file tells them apart."""
    algorithms = {32: "md5", 64: "sha256"}
    if len(hex_hash) not in algorithms:
        raise ValueError(f"{hex_hash!r} is neither an md5 nor a sha256 hex digest")
    return algorithms[len(hex_hash)]


def file_digest(path: Path, name: str = "sha256") -> str:
    digest = hashlib.new(name)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, item: WeightsFile) -> None:
    """Raise WeightsError unless the file has the published hash (or, without one, is HDF5)."""
    if item.hash is None:
        with open(path, "rb") as fh:
            if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                raise WeightsError(f"{item.name}: not an HDF5 file (Keras publishes no hash to check it by)")
        return
    actual = file_digest(path, algorithm(item.hash))
    if actual != item.hash.lower():
        raise WeightsError(f"{item.name}: {algorithm(item.hash)} mismatch: expected {item.hash}, got {actual}")


def fetch(
    backbone: str,
    cache: str | os.PathLike | None = None,
    base_url: str | None = None,
    table: dict[str, WeightsFile] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download, verify and atomically install a backbone's ImageNet file (login node); return its path.
    A file already there and verified is not downloaded again. progress(bytes_done, bytes_total)."""
    item = entry(backbone, table)
    folder = Path(cache) if cache is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    final, part = folder / item.name, folder / f"{item.name}.part"
    url = (base_url or os.environ.get("HPML_WEIGHTS_URL") or BASE_URL).rstrip("/") + "/" + item.path
    with _locked(folder / f"{item.name}.lock"):
        if final.is_file():
            try:
                verify(final, item)
                return final
            except WeightsError as exc:
                log.warning("%s; downloading it again", exc)
                final.unlink()
        _download(url, part, progress)
        try:
            verify(part, item)
        except WeightsError as exc:
            part.unlink(missing_ok=True)
            raise WeightsError(f"{exc} (downloaded from {url}; the download was deleted)") from None
        os.replace(part, final)
    return final


def resolve(weights: str | None, backbone: str) -> str | None:
    """model.weights -> a local file (compute nodes): "imagenet" is the cached file, never downloaded."""
    if weights != "imagenet":  # None, or a local file
        return weights
    path = cache_dir() / entry(backbone).name
    if not path.is_file():
        raise WeightsError(
            f"model.weights: imagenet: {path} not found, and compute nodes download nothing. On a login node run "
            f"`HPML_WEIGHTS_DIR={path.parent} hpml weights fetch {backbone}`, with HPML_WEIGHTS_DIR a folder the "
            "compute nodes see (shared project space), and set the same HPML_WEIGHTS_DIR in the job"
        )
    return str(path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        except OSError as exc:
            log.warning("%s: no file lock (%s): do not fetch this file twice at once", path, exc)
        yield


class _Incomplete(Exception):
    """The connection ended before the announced number of bytes: resume."""


def _download(url: str, part: Path, progress: Callable[[int, int | None], None] | None) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _download_once(url, part, progress)
        except (_Incomplete, OSError, http.client.HTTPException) as exc:
            if attempt == ATTEMPTS:
                raise WeightsError(
                    f"could not download {url} ({ATTEMPTS} attempts): {exc}; run again to resume {part}"
                ) from None
            log.warning("%s: %s; resuming (attempt %d of %d)", url, exc, attempt + 1, ATTEMPTS)
            time.sleep(RETRY_DELAY_S * attempt)


def _download_once(url: str, part: Path, progress: Callable[[int, int | None], None] | None) -> None:
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the .part is no prefix of the file: start over
            part.unlink()
            return _download_once(url, part, progress)
        raise WeightsError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    with response:
        content_range = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        length = response.headers.get("Content-Length")
        if response.status == 206 and content_range and int(content_range[1]) == start:
            total = int(content_range[2]) if content_range[2] != "*" else None
            mode = "ab"
        elif response.status == 206:
            part.unlink()
            raise _Incomplete(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        else:  # 200: the server sends the whole file, whatever Range asked for
            start, mode = 0, "wb"
            total = int(length) if length is not None else None
        log.info("%s -> %s%s", url, part, f" (resuming at byte {start})" if start else "")
        done = start
        with open(part, mode) as fh:
            while block := response.read(CHUNK):
                fh.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and done != total:  # http.client returns a short body without complaint
        raise _Incomplete(f"connection closed after {done} of {total} bytes")
