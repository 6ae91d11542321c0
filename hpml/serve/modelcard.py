"""The model card that travels with an export (after Mitchell et al. 2019, "Model Cards for Model
Reporting"): what the model is, what data and split policy made it, how well it did WITH the
intervals, what it is for and what it is not for.

Metrics come from the run's evaluations (RUN/eval/<split>/metrics.json); the card says which
checkpoint they were computed with, and warns when that is not the exported one or when no
test evaluation exists, instead of leaving a reader to assume.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from hpml.core.config import CLASSES, Config
from hpml.core.runfiles import RunDir
from hpml.serve.predict import DISCLAIMER

log = logging.getLogger(__name__)
INTENDED_USE = (
    "Research on COVID-19 / pneumonia / normal classification of frontal chest X-rays (PA/AP): "
    "benchmarking, reproducing COVID-Net-style results, studying distributed training."
)
OUT_OF_SCOPE = [
    "Diagnosis, triage or any clinical decision about a patient.",
    "Lateral views, CT, paediatric images, or populations and devices unlike the training sources.",
    "Any setting where its errors are not checked by a qualified reader: the training sources "
    "(public COVIDx collections) mix hospitals, devices and label qualities, and COVID-19 images "
    "come from different sources than normals, so a model can learn the source instead of the disease.",
]

KEEP = (
    "count support accuracy sensitivity ppv macro_precision macro_recall macro_f1 intervals bootstrap areas "
    "calibration checkpoint manifest_sha256"
).split()


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(run_dir: Path, cfg: Config, checkpoint: str) -> dict:
    """Everything the card says, as JSON (also written as model_card.json)."""
    # The shards the run trained on name the split they were made from (manifest.json); the
    # config's data.split_dir may be a default that was never used.
    shards = Path(cfg.data.shards) if cfg.data.shards else None
    manifest = _read(shards / "manifest.json") if shards else None
    split_dir = Path(manifest["split_dir"]) if manifest and manifest.get("split_dir") else None
    split_meta = _read(split_dir / "split.json") if split_dir else None
    evaluations = {}
    for split in ("test", "val"):
        metrics = _read(RunDir(run_dir).eval(split) / "metrics.json")
        if metrics:
            evaluations[split] = {k: metrics.get(k) for k in KEEP}
            evaluations[split]["same_checkpoint_as_export"] = metrics.get("checkpoint") == checkpoint
            if manifest:
                digest = hashlib.sha256((shards / "manifest.json").read_bytes()).hexdigest()
                evaluations[split]["same_shards_as_training"] = metrics.get("manifest_sha256") == digest
    data = {
        "image_size": cfg.data.image_size,
        "preprocessing": {
            "policy": cfg.preprocess.policy,
            "top_crop": cfg.preprocess.top_crop,
            "encoding": cfg.preprocess.encoding,
        },
        "split_policy": "patient-level (no patient in two splits), class-stratified, seeded; exact duplicate "
        "images dropped; a patient with differently labelled images placed by the most severe "
        "label (COVID-19 > pneumonia > normal)",
        "split_dir": str(split_dir) if split_dir else None,
        "shards": str(shards) if shards else None,
        "images_per_split": {k: v["classes"] for k, v in manifest["totals"].items()} if manifest else None,
    }
    if split_meta:
        data.update(
            seed=split_meta.get("seed"),
            sources=sorted(split_meta.get("roots", {})),
            images=split_meta.get("images"),
            patients=split_meta.get("patients"),
            imported_from=split_meta.get("imported_from"),
        )
    return {
        "model": {
            "backbone": cfg.model.backbone,
            "head": cfg.model.head,
            "classes": list(CLASSES),
            "checkpoint": checkpoint,
            "input": f"{cfg.data.image_size}x{cfg.data.image_size} uint8 gray",
        },
        "training": {
            "epochs": cfg.train.epochs,
            "batch_size_per_rank": cfg.train.batch_size,
            "optimizer": cfg.train.optimizer,
            "lr": cfg.train.lr,
            "class_weights": cfg.train.class_weights,
            "augment": vars(cfg.train.augment),
            "seed": cfg.train.seed,
        },
        "data": data,
        "evaluations": evaluations,
        "intended_use": INTENDED_USE,
        "out_of_scope": OUT_OF_SCOPE,
        "disclaimer": DISCLAIMER,
    }


def _ci(interval) -> str:
    return "n/a" if not interval else f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}"


def _evaluation_md(split: str, e: dict) -> list[str]:
    iv, bs, areas = e.get("intervals") or {}, e.get("bootstrap") or {}, e.get("areas") or {}
    lines = [f"### {split} split ({e['count']} images)"]
    if not e["same_checkpoint_as_export"]:
        lines.append(f"**Warning: evaluated with `{e['checkpoint']}`, not the exported checkpoint.**")
    if e.get("same_shards_as_training") is False:
        lines.append("**Warning: evaluated on other shards than the run trained from (manifest differs).**")
    table = ["| class | sensitivity % (95 % CI) | PPV % (95 % CI) | ROC AUC |", "|:---|:---:|:---:|:---:|"]
    for c in CLASSES:
        auc = (areas.get("roc_auc") or {}).get(c)
        table.append(
            f"| {c} | {100 * e['sensitivity'][c]:.1f} ({_ci((iv.get('sensitivity') or {}).get(c))}) | "
            f"{100 * e['ppv'][c]:.1f} ({_ci((iv.get('ppv') or {}).get(c))}) | "
            f"{'n/a' if auc is None else f'{auc:.3f}'} |"
        )
    lines.append("\n".join(table))
    lines.append(
        f"Accuracy {100 * e['accuracy']:.1f} % ({_ci(bs.get('accuracy'))}), macro F1 "
        f"{100 * e['macro_f1']:.1f} % ({_ci(bs.get('macro_f1'))}); intervals: {iv.get('method', 'n/a')} "
        f"per class, {bs.get('method', 'n/a')} overall."
    )
    if e.get("calibration"):
        lines.append(f"Expected calibration error {e['calibration']['ece']:.3f} ({e['calibration']['bins']} bins).")
    return lines


def markdown(card: dict) -> str:
    m, d, t = card["model"], card["data"], card["training"]
    lines = [
        f"# Model card: {m['backbone']} + {m['head']} head, {', '.join(m['classes'])}",
        f"**{card['disclaimer']}**",
        "## Model",
        f"Input {m['input']} (the model scales and makes RGB itself); softmax over {', '.join(m['classes'])}. "
        f"Checkpoint `{m['checkpoint']}`.",
        f"Trained {t['epochs']} epochs, {t['optimizer']} lr {t['lr']}, batch {t['batch_size_per_rank']} per rank, "
        f"class weights {t['class_weights']}, seed {t['seed']}.",
        "## Data and split policy",
        f"Split: {d['split_policy']}. Preprocessing: {d['preprocessing']}, {d['image_size']} px.",
        f"Images per split and class (shards `{d['shards']}`): {d['images_per_split']}.",
    ]
    if d.get("sources"):
        lines.append(
            f"Sources: {', '.join(d['sources'])}; split seed {d.get('seed')}; images per split "
            f"{d.get('images')}; patients per split {d.get('patients')}."
        )
    else:
        lines.append("The split.json named by the shards' manifest was not found; sources unknown.")
    lines.append("## Metrics (with 95 % intervals)")
    if not card["evaluations"]:
        lines.append("**NOT EVALUATED: no RUN/eval/*/metrics.json. Run `hpml evaluate --split test` first.**")
    elif "test" not in card["evaluations"]:
        lines.append(
            "**Only the validation split was evaluated; it was used for model selection, so its numbers "
            "are optimistic. Run `hpml evaluate --split test`.**"
        )
    for split, e in card["evaluations"].items():
        lines += _evaluation_md(split, e)
    lines += ["## Intended use", card["intended_use"], "## Out of scope"]
    lines.append("\n".join(f"- {item}" for item in card["out_of_scope"]))
    return "\n\n".join(lines) + "\n"


def write(run_dir: Path, cfg: Config, checkpoint: str, out: Path) -> Path:
    card = collect(run_dir, cfg, checkpoint)
    if "test" not in card["evaluations"]:
        log.warning("model card: %s has no test evaluation; the card says so", run_dir)
    (out / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    path = out / "MODEL_CARD.md"
    path.write_text(markdown(card))
    return path
