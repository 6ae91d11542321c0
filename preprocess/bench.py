"""`hpml bench preprocess`: what the MPI stage costs against a bare OpenCV loop, in one run.

(a) bare: one core, read + decode + resize + encode with OpenCV (pydicom for DICOM), nothing
    else; (b) `hpml preprocess` on 1 MPI rank; (c) on N ranks. Rates exclude interpreter and
    TensorFlow start-up (reported separately as wall time), since that is paid once per job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hpml.config import Config
from hpml.world import mpirun_env
from preprocess.manifest import REPORT
from preprocess.plan import read_items


def _bare_decode(path: str) -> np.ndarray:
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if img is None:  # DICOM: the minimal pydicom path
        import pydicom

        px = pydicom.dcmread(path).pixel_array.astype(np.float32)
        img = cv2.normalize(px, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return img


def bare_loop(paths: list[str], size: int, quality: int) -> float:
    start = time.perf_counter()
    for path in paths:
        img = cv2.resize(_bare_decode(path), (size, size), interpolation=cv2.INTER_AREA)
        cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return len(paths) / (time.perf_counter() - start)


def mpi_run(ranks: int, split_dir: Path, config: Path | None, overrides: list[str]) -> tuple[float, float]:
    out = Path(tempfile.mkdtemp(prefix="hpml-bench-"))
    cmd = ["mpirun", "-np", str(ranks), sys.executable, "-m", "hpml.cli", "preprocess",
           "--split-dir", str(split_dir), "--out", str(out)]  # fmt: skip
    cmd += ["--config", str(config)] if config else []
    for item in overrides:
        cmd += ["--set", item]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=mpirun_env())
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        report = json.loads((out / REPORT).read_text())
        return report["images_per_second"], wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def bench(cfg: Config, split_dir: Path, ranks: int, config: Path | None, overrides: list[str]) -> dict:
    items = [it for it in read_items(split_dir, cfg.data.splits) if it.size > 0]
    paths = [it.path for it in items]
    size, quality = cfg.data.image_size, cfg.preprocess.jpeg_quality
    mb = sum(it.size for it in items) / 1e6
    print(f"image set: {len(paths)} files, {mb:.1f} MB, from {split_dir}; output {size} px JPEG q{quality}")
    bare = bare_loop(paths, size, quality)
    one, one_wall = mpi_run(1, split_dir, config, overrides)
    many, many_wall = mpi_run(ranks, split_dir, config, overrides)
    rows = [("(a) bare OpenCV loop, 1 core", bare, None), ("(b) hpml preprocess, 1 rank", one, one_wall),
            (f"(c) hpml preprocess, {ranks} ranks", many, many_wall)]  # fmt: skip
    for name, rate, wall in rows:
        extra = f"  (wall {wall:.1f}s incl. start-up)" if wall else ""
        print(f"{name:<34} {rate:8.1f} img/s{extra}")
    print(f"ratio (b)/(a) = {one / bare:.2f}   (target >= 0.85)")
    print(f"ratio (c)/(b) = {many / one:.2f}   (target >= 1.8 for 2 ranks)")
    return {"bare": bare, "one": one, "many": many, "ranks": ranks}
