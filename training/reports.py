"""Run artifacts: training-history and confusion-matrix plots, per-class report."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from emostream.labels import EMOTIONS


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, training against validation (as in the article)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history.get(metric, []), label="train")
        ax.plot(epochs, history.get(f"val_{metric}", []), label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], path: Path, title: str = "validation") -> None:
    """Row-normalised confusion matrix (rows: true class)."""
    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set(xlabel="predicted", ylabel="true", title=f"normalized confusion matrix ({title})")
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=8,
            )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(before: list[dict], after: list[dict], temperature: float, path: Path) -> None:
    """Accuracy against mean confidence per bin of the top score, raw and temperature-scaled."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for rows, label in ((before, "raw softmax"), (after, f"temperature {temperature:.2f}")):
        shown = [r for r in rows if r["n"]]
        ax.plot([r["confidence"] for r in shown], [r["accuracy"] for r in shown], marker="o", label=label)
    ax.set(
        xlabel="confidence (top score)", ylabel="accuracy", title="reliability (validation)", xlim=(0, 1), ylim=(0, 1)
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def classification_report(metrics: dict) -> str:
    """A plain-text per-class precision/recall/F1 table with the overall figures."""
    lines = [f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name in EMOTIONS:
        row = metrics["per_class"][name]
        lines.append(f"{name:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10}")
    lines.append("")
    lines.append(f"accuracy {metrics['accuracy']:.4f}   macro F1 {metrics['macro_f1']:.4f}   n {metrics['n']}")
    return "\n".join(lines) + "\n"
