"""Evaluation figures: one-vs-rest ROC and precision-recall curves, and the reliability diagram."""

from __future__ import annotations

from pathlib import Path

from hpml.core.config import CLASSES

COLOURS = {"normal": "tab:blue", "pneumonia": "tab:orange", "COVID-19": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_pr(curves: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    for c in CLASSES:
        roc, pr, colour = curves[c]["roc"], curves[c]["pr"], COLOURS[c]
        if roc["auc"] is not None:
            left.plot(
                roc["fpr"],
                roc["tpr"],
                color=colour,
                drawstyle="default",
                label=f"{c} (AUC {roc['auc']:.3f}, n={curves[c]['positives']})",
            )
        if pr["average_precision"] is not None:
            # Step plot from recall 0: the curve that average precision is the area under.
            right.step(
                [0.0, *pr["recall"]],
                [pr["precision"][0], *pr["precision"]],
                where="pre",
                color=colour,
                label=f"{c} (AP {pr['average_precision']:.3f})",
            )
            prevalence = curves[c]["positives"] / max(1, sum(curves[k]["positives"] for k in CLASSES))
            right.axhline(prevalence, color=colour, linestyle=":", linewidth=1)
    left.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="chance")
    left.set(
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title="ROC, one vs rest",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    right.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall (dotted: prevalence)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.05),
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left" if axis is right else "lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(cal: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    edges = cal["edges"]
    width = edges[1] - edges[0]
    centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    filled = [i for i, n in enumerate(cal["count"]) if n]
    xs = [centres[i] for i in filled]
    acc, conf = [cal["bin_accuracy"][i] for i in filled], [cal["bin_confidence"][i] for i in filled]
    top.bar(xs, acc, width=width * 0.9, color="tab:blue", edgecolor="black", label="accuracy in bin")
    # The gap drawn as a red segment from the bar's top to the bin's mean confidence: above the
    # bar = over-confident, below = under-confident.
    top.vlines(xs, acc, conf, color="tab:red", linewidth=3, alpha=0.8)
    top.plot(xs, conf, "o", color="tab:red", markersize=5, label="mean confidence in bin")
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    top.set(
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"{title}\nECE {cal['ece']:.3f}, MCE {cal['mce']:.3f} ({cal['bins']} bins, top label)",
    )
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(centres, cal["count"], width=width * 0.95, color="gray")
    bottom.set(xlabel="confidence (largest softmax probability)", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
