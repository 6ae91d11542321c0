"""`hpml bench preprocess`: what the MPI stage costs against a bare OpenCV loop, in one run.

(a) bare: one core, read + decode + resize + encode with OpenCV (pydicom for DICOM), nothing
    else; (b) `hpml preprocess` on 1 MPI rank; (c) on N ranks. Rates exclude interpreter and
    TensorFlow start-up (reported separately as wall time), since that is paid once per job.
Rounds of (a), (b), (c) repeat until both ratios' 95 % intervals judge their targets
(hpml.bench.rounds): (b)/(a) >= 0.85, and (c)/(b) >= 0.9 x ranks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hpml.bench.rounds import Budget, until_decided
from hpml.core.config import Config
from hpml.parallel.mpi import mpirun_env
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
    """(images/s as the run's own report measures it, wall seconds including start-up)."""
    out = Path(tempfile.mkdtemp(prefix="hpml-bench-"))
    cmd = ["mpirun", "-np", str(ranks), sys.executable, "-m", "hpml.cli", "preprocess"]
    cmd += ["--split-dir", str(split_dir), "--out", str(out)]
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


@dataclass(frozen=True)
class Request:
    """What to preprocess: the split folder, the config file and its overrides, the rank count."""

    split_dir: Path
    ranks: int
    config: Path | None = None
    overrides: tuple[str, ...] = ()


def bench(cfg: Config, request: Request, budget: Budget = Budget()) -> dict:
    items = [it for it in read_items(request.split_dir, cfg.data.splits) if it.size > 0]
    paths = [it.path for it in items]
    size, quality, ranks = cfg.data.image_size, cfg.preprocess.jpeg_quality, request.ranks
    mb = sum(it.size for it in items) / 1e6
    print(f"image set: {len(paths)} files, {mb:.1f} MB, from {request.split_dir}; output {size} px JPEG q{quality}")
    rates: dict[str, list[float]] = {"bare": [], "one": [], "many": []}
    walls: dict[str, list[float]] = {"one": [], "many": []}
    targets = {"(b)/(a)": 0.85, "(c)/(b)": 0.9 * ranks}

    def one_round(_: int) -> dict[str, float]:
        rates["bare"].append(bare_loop(paths, size, quality))
        for key, n in (("one", 1), ("many", ranks)):
            rate, wall = mpi_run(n, request.split_dir, request.config, list(request.overrides))
            rates[key].append(rate)
            walls[key].append(wall)
        return {"(b)/(a)": rates["one"][-1] / rates["bare"][-1], "(c)/(b)": rates["many"][-1] / rates["one"][-1]}

    estimates = until_decided(one_round, targets, budget)
    rows = [
        ("(a) bare OpenCV loop, 1 core", "bare"),
        ("(b) hpml preprocess, 1 rank", "one"),
        (f"(c) hpml preprocess, {ranks} ranks", "many"),
    ]
    for name, key in rows:
        extra = f"  (wall {np.median(walls[key]):.1f}s incl. start-up)" if key in walls else ""
        print(f"{name:<34} {np.median(rates[key]):8.1f} img/s (median of {len(rates[key])}){extra}")
    for name, est in estimates.items():
        print("ratio " + est.line(name))
    verdicts = {name: vars(est) | {"verdict": est.verdict} for name, est in estimates.items()}
    return {"rates": rates, "ranks": ranks, "ratios": verdicts}
