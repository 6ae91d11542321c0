"""`hpml export`: a SavedModel and a Keras file, with the preprocessing contract and the model
card (hpml.serve.modelcard: data, split policy, metrics with intervals, intended use) beside them."""

from __future__ import annotations

import json
from pathlib import Path

from hpml.core.config import CLASSES
from hpml.serve import modelcard
from hpml.train.checkpoints import load_trained


def export(run_dir: Path, which: str = "best", out: Path | None = None) -> Path:
    cfg, model, description = load_trained(run_dir, which)
    out = out or run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / "saved_model"), save_format="tf")
    model.save(str(out / "model.keras"))
    p = cfg.preprocess
    contract = {
        "input": {
            "shape": [cfg.data.image_size, cfg.data.image_size, 1],
            "dtype": "uint8",
            "meaning": "grayscale; the model scales to [0, 1] and replicates to 3 channels",
        },
        "preprocessing": {
            "decode": "hpml.imaging.read_gray (PNG/JPEG/DICOM, MONOCHROME1 inverted)",
            "policy": p.policy,
            "top_crop": p.top_crop,
            "image_size": cfg.data.image_size,
            "encoding": p.encoding,
            "jpeg_quality": p.jpeg_quality,
        },
        "output": {"softmax_over": list(CLASSES)},
        "checkpoint": description,
        "model": {"backbone": cfg.model.backbone, "head": cfg.model.head},
    }
    (out / "preprocessing.json").write_text(json.dumps(contract, indent=1) + "\n")
    modelcard.write(run_dir, cfg, description, out)
    return out
