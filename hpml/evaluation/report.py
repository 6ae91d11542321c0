"""Evaluation reports: the seed README's three tables in Markdown, and the plots."""

from __future__ import annotations

from pathlib import Path

from hpml.core import history
from hpml.core.config import CLASSES

NAMES = {"normal": "Normal", "pneumonia": "Pneumonia", "COVID-19": "COVID-19"}


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(":---:" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown(metrics: dict, split: str, checkpoint: str) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    names = [NAMES[c] for c in CLASSES]
    cm = metrics["confusion_matrix"]
    parts = [
        f"# Evaluation on the {split} split",
        f"Checkpoint: `{checkpoint}`; {metrics['count']} images "
        f"({', '.join(f'{NAMES[c]} {n}' for c, n in zip(CLASSES, metrics['support'], strict=True))}).",
        "" if split == "test" else "_Validation split: use it for model selection; report test numbers once._",
        "### Sensitivity (%)",
        _table(names, [[pct(metrics["sensitivity"][c]) for c in CLASSES]]),
        "### Positive Predictive Value (%)",
        _table(names, [[pct(metrics["ppv"][c]) for c in CLASSES]]),
        "### Confusion matrix (rows: true, columns: predicted)",
        _table(["", *names], [[f"**{names[i]}**", *map(str, row)] for i, row in enumerate(cm)]),
        "### Overall",
        _table(
            ["Accuracy (%)", "Macro precision (%)", "Macro recall (%)", "Macro F1 (%)"],
            [
                [
                    pct(metrics["accuracy"]),
                    pct(metrics["macro_precision"]),
                    pct(metrics["macro_recall"]),
                    pct(metrics["macro_f1"]),
                ]
            ],
        ),
        *uncertainty(metrics),
        "_Research use only; not for clinical diagnosis._",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _ci(interval) -> str:
    return "n/a" if not interval else f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}"


def uncertainty(metrics: dict) -> list[str]:
    """The sections beside the seed tables: intervals, areas, calibration (when computed)."""
    iv, bs, areas, cal = (metrics.get(k) for k in ("intervals", "bootstrap", "areas", "calibration"))
    if not iv or not metrics["count"]:
        return []
    auc = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [
        [
            f"**{NAMES[c]}**",
            str(n),
            f"{100 * metrics['sensitivity'][c]:.1f}",
            _ci(iv["sensitivity"][c]),
            f"{100 * metrics['ppv'][c]:.1f}",
            _ci(iv["ppv"][c]),
            auc(areas["roc_auc"][c]),
            auc(areas["average_precision"][c]),
        ]
        for c, n in zip(CLASSES, metrics["support"], strict=True)
    ]
    level = f"{100 * iv['level']:.0f} %"
    overall = [
        [name, f"{100 * metrics[key]:.1f}", _ci(bs.get(key))]
        for name, key in (
            ("Accuracy", "accuracy"),
            ("Macro precision", "macro_precision"),
            ("Macro recall", "macro_recall"),
            ("Macro F1", "macro_f1"),
        )
    ]
    return [
        f"### Per class with {level} intervals ({iv['method']})",
        _table(
            ["", "n", "Sensitivity (%)", f"{level} CI", "PPV (%)", f"{level} CI", "ROC AUC", "Average precision"], rows
        ),
        f"### Overall with {level} intervals ({bs['method']}: {bs['resamples']} resamples of "
        f"{bs['patients']} patients, seed {bs['seed']})",
        _table(["", "%", f"{level} CI"], overall),
        f"Macro ROC AUC {auc(areas['macro_roc_auc'])}, macro average precision "
        f"{auc(areas['macro_average_precision'])} ({areas['definition']}).",
        f"### Calibration\n\nExpected calibration error **{cal['ece']:.3f}** (worst bin {cal['mce']:.3f}; "
        f"mean confidence {100 * cal['mean_confidence']:.1f} % vs accuracy {100 * cal['accuracy']:.1f} %; "
        f"{cal['definition']}, {cal['bins']} bins).",
        "![ROC and precision-recall curves](roc_pr.png)\n\n![Reliability diagram](reliability.png)",
    ]


def plot_confusion(cm: list[list[int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(cm, cmap="Blues")
    names = [NAMES[c] for c in CLASSES]
    ax.set_xticks(range(3), names)
    ax.set_yticks(range(3), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in cm) or 1
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(history_csv: Path, path: Path) -> bool:
    if not history_csv.is_file():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = history.read(history_csv)
    if not rows:
        return False
    epochs = [r["epoch"] + 1 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, axis in (("loss", left), ("accuracy", right)):
        axis.plot(epochs, [r[key] for r in rows], "o-", label=f"train {key}")
        axis.plot(epochs, [r.get(f"val_{key}", float("nan")) for r in rows], "s-", label=f"val {key}")
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
