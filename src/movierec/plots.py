"""The evaluate stage's pictures, drawn with matplotlib's file-only backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; also never opens windows
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from movierec.io import atomic_path

DPI = 100


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        # Metadata off: the PNG bytes then depend only on the data, so reruns do not churn git.
        fig.savefig(tmp, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def curve(history: pd.DataFrame, metric: str, path: str | Path, ylabel: str) -> None:
    """The tutorial's figure: train vs test ``metric`` per epoch (and validation, if any)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(history["epoch"], history[f"train_{metric}"], marker="o", label=f"train {metric}")
    ax.plot(history["epoch"], history[f"test_{metric}"], marker="o", label=f"test {metric}")
    if f"val_{metric}" in history:
        ax.plot(history["epoch"], history[f"val_{metric}"], marker="o",
                label=f"validation {metric} (early stopping)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{metric}: train vs test")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def predicted_by_star(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path) -> None:
    """Distribution of predictions for each true rating, against the perfect diagonal."""
    stars = np.unique(y_true)
    groups = [y_pred[y_true == s] for s in stars]
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    ax.boxplot(groups, positions=stars, widths=0.3, whis=(5, 95), showfliers=False)
    ax.plot(stars, [g.mean() for g in groups], "o-", color="tab:red", label="mean prediction")
    lo, hi = float(stars.min()), float(stars.max())
    ax.plot([lo, hi], [lo, hi], "--", color="grey", label="perfect")
    ax.set_xticks(stars, [f"{s:g}" for s in stars])
    ax.set_xlabel("true rating")
    ax.set_ylabel("predicted rating")
    ax.set_title("Predicted vs true rating on the test split (boxes: quartiles, 5-95%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, path)


def rating_histograms(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path) -> None:
    """How the spread of predictions compares with the spread of true ratings."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bins = np.arange(0.0, 5.75, 0.25)
    ax.hist(y_true, bins=bins, alpha=0.6, label="true", density=True)
    ax.hist(np.clip(y_pred, 0.0, 5.5), bins=bins, alpha=0.6, label="predicted", density=True)
    ax.set_xlabel("rating")
    ax.set_ylabel("density")
    ax.set_title("Test ratings: true vs predicted")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
