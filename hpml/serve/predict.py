"""`hpml predict`: classify image files (PNG, JPEG, DICOM) with a trained run.

A file takes exactly the path its pixels took into the shards: hpml.imaging decode and crop
policy, the record encoding (JPEG at the configured quality, or PNG), then the same decode
as the training pipeline. So the model sees, bit for bit, the input it was trained on.
With `explain_dir`, a Grad-CAM overlay (hpml.serve.gradcam) of each file is written there, computed
on that same model input.

A file that cannot be classified (unreadable, not an image, over hpml.imaging's size limits, a
FIFO or device) is listed by name with its reason (`UNREADABLE: ...`, and in the CSV's `error`
column); the other files are still classified. Exit status: 0 when every file was classified,
3 when some were and some were not (a job script must not take a partial answer for a whole one),
1 when none was (no file found, or none readable).

`classify` does the work and prints nothing (hpml.api.predict returns its rows); `predict` is the
command: it prints the table and writes the CSV and overlays from what `classify` returned.
"""

from __future__ import annotations

import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hpml.core.config import CLASSES, Config
from hpml.core.errors import UsageError
from hpml.imaging import ImageError, encode, load_model_image
from hpml.serve.gradcam import gradcam, overlay
from hpml.train.checkpoints import load_trained
from hpml.train.data import decode_record_image

log = logging.getLogger(__name__)
EXIT_SOME_UNREADABLE = 3  # some files classified, some not (0: all classified; 1: none)
DISCLAIMER = (
    "DISCLAIMER: research software. These predictions are not a medical diagnosis and must not "
    "be used for clinical decisions."
)
EXTENSIONS = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


def model_input(path: str | Path, cfg: Config) -> np.ndarray:
    """uint8 [size, size, 1] exactly as the file's record in the shards would decode."""
    p = cfg.preprocess
    img, _ = load_model_image(path, cfg.data.image_size, p.policy, p.top_crop)
    encoded = encode(img, p.encoding, p.jpeg_quality)
    return decode_record_image(tf.constant(encoded), cfg.data.image_size).numpy()


def expand(targets: list[Path]) -> list[Path]:
    files = []
    for target in targets:
        if target.is_dir():
            files += sorted(p for p in target.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        else:
            files.append(target)
    return files


def explain_names(files: list[Path]) -> list[str]:
    """One PNG name per file, unique even when two folders hold the same file name."""
    names, seen = [], set()
    for path in files:
        name, n = f"{path.stem}.gradcam.png", 1
        while name in seen:
            n += 1
            name = f"{path.stem}-{n}.gradcam.png"
        seen.add(name)
        names.append(name)
    return names


def write_explanations(
    model, cfg: Config, files: list[Path], inputs: np.ndarray, out: Path, target: str = "vs-normal"
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    maps, used, probs = gradcam(model, inputs, batch=cfg.eval.batch_size, target=target)
    written = []
    for path, name, image, heat, c, p in zip(files, explain_names(files), inputs, maps, used, probs, strict=True):
        title = f"{path.name}: {CLASSES[c]} (p = {p[c]:.3f}); Grad-CAM target {target}"
        if not heat.any():
            title += " - flat map: no positive evidence"
        overlay(image, heat, out / name, title, footer="research software, not a diagnosis")
        written.append(out / name)
    return written


@dataclass(frozen=True)
class Classified:
    """What `classify` found: every file, the model's input and probabilities of those it could read,
    and the reason for each it could not."""

    cfg: Config
    model: Any
    description: str  # which weights (a file name)
    files: list[Path]  # every file found, in the order given (folders expanded, sorted)
    kept: list[Path]  # the files classified, in that order
    inputs: list[np.ndarray]  # their model inputs (uint8 [size, size, 1])
    probs: np.ndarray  # their probabilities, [len(kept), len(CLASSES)]
    failed: list[tuple[Path, str]]  # (file, why it could not be classified)

    def rows(self) -> list[dict]:
        """One dict per file found, in order: file, probabilities (class -> p), predicted, error."""
        result = {path: (p, None) for path, p in zip(self.kept, self.probs, strict=True)}
        result.update({path: (None, reason) for path, reason in self.failed})
        rows = []
        for path in self.files:
            p, error = result[path]
            rows.append(
                {
                    "file": str(path),
                    "probabilities": None if p is None else {c: float(v) for c, v in zip(CLASSES, p, strict=True)},
                    "predicted": None if p is None else CLASSES[int(np.argmax(p))],
                    "error": error,
                }
            )
        return rows


def classify(
    run_dir: Path | None, targets: list[Path], which: str = "best", config: Path | None = None, overrides=()
) -> Classified:
    """Classify `targets` (files or folders) with a run's weights, or (no run) with `config` and the
    weights file `which`; prints nothing. A file that cannot be read is listed in `failed`."""
    cfg, model, description = load_trained(run_dir, which, overrides, config)
    files = expand([Path(t) for t in targets])
    inputs, kept, failed = [], [], []
    for path in files:
        try:
            inputs.append(model_input(path, cfg))
            kept.append(path)
        except ImageError as exc:
            failed.append((path, exc.reason))
            log.warning("skipping %s: %s", path, exc.reason)
        except UsageError:  # a bad setting (HPML_MAX_PIXELS=...) is the run's, not one file's
            raise
        except Exception as exc:  # as in preprocessing: a decoder's failure is this file's, not the run's
            failed.append((path, f"decode failed: {type(exc).__name__}: {exc}"))
            log.warning("skipping %s: %s", path, failed[-1][1])
    probs = (
        model.predict(np.stack(inputs), batch_size=cfg.eval.batch_size, verbose=0)
        if inputs
        else np.zeros((0, len(CLASSES)), np.float32)
    )
    return Classified(cfg, model, description, files, kept, inputs, probs, failed)


def predict(
    run_dir: Path | None,
    targets: list[Path],
    which: str = "best",
    csv_path: Path | None = None,
    explain_dir: Path | None = None,
    explain_target: str = "vs-normal",
    config: Path | None = None,
    overrides=(),
) -> int:
    """`hpml predict`: `classify`, then the table, the CSV, Grad-CAM overlays; returns the exit status."""
    found = classify(run_dir, targets, which, config, overrides)
    cfg, model, description, files = found.cfg, found.model, found.description, found.files
    kept, inputs, probs, failed = found.kept, found.inputs, found.probs, found.failed
    width = max((len(str(p)) for p in kept), default=4)
    print(f"{'file':<{width}}  {'class':<9}  " + "  ".join(f"{c:>9}" for c in CLASSES))
    for path, p in zip(kept, probs, strict=True):
        print(f"{str(path):<{width}}  {CLASSES[int(p.argmax())]:<9}  " + "  ".join(f"{v:9.4f}" for v in p))
    for path, reason in failed:
        print(f"{str(path):<{width}}  UNREADABLE: {reason}")
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "predicted", *(f"p_{c}" for c in CLASSES), "error"])
            writer.writerows(
                [str(f), CLASSES[int(p.argmax())], *(f"{v:.6f}" for v in p), ""]
                for f, p in zip(kept, probs, strict=True)
            )
            writer.writerows([str(f), "", "", "", "", reason] for f, reason in failed)
    if explain_dir and kept:
        written = write_explanations(model, cfg, kept, np.stack(inputs), explain_dir, explain_target)
        print(f"Grad-CAM overlays: {len(written)} PNG files in {explain_dir}")
    print(f"model: {description}; {len(kept)} predicted, {len(failed)} unreadable")
    print(DISCLAIMER)
    sys.stdout.flush()
    if not kept:
        # Nothing classified (no files found, or none readable) is a failure a job script must see.
        print(f"hpml predict: no file could be classified ({len(files)} found)", file=sys.stderr)
        return 1
    if failed:
        print(f"hpml predict: {len(failed)} of {len(files)} files could not be classified", file=sys.stderr)
        return EXIT_SOME_UNREADABLE
    return 0
