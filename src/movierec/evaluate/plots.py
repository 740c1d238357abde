"""The evaluate stage's pictures, drawn with matplotlib's file-only backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; also never opens windows
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from movierec.core.files import atomic_path

DPI = 100


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        # Metadata off: the PNG bytes then depend only on the data, so reruns do not churn git.
        fig.savefig(tmp, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def curve(history: pd.DataFrame, metric: str, path: str | Path, ylabel: str) -> None:
    """The tutorial's figure: train vs test ``metric`` per epoch (and validation, if any);
    a part the history lacks (no train NDCG) is left out."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    parts = [(f"train_{metric}", f"train {metric}"), (f"test_{metric}", f"test {metric}"),
             (f"val_{metric}", f"validation {metric} (early stopping)")]
    for column, label in parts:
        if column in history:
            ax.plot(history["epoch"], history[column], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    shown = [part for part in ("train", "test") if f"{part}_{metric}" in history]
    ax.set_title(f"{metric}: {' vs '.join(shown)}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def predicted_by_star(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path,
                      scores: bool = False) -> None:
    """Distribution of predictions for each true rating, against the perfect diagonal; with
    ``scores`` (a ranking model) the outputs are scores, with no diagonal to meet."""
    stars = np.unique(y_true)
    groups = [y_pred[y_true == s] for s in stars]
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    ax.boxplot(groups, positions=stars, widths=0.3, whis=(5, 95), showfliers=False)
    ax.plot(stars, [g.mean() for g in groups], "o-", color="tab:red", label="mean prediction")
    lo, hi = float(stars.min()), float(stars.max())
    if not scores:
        ax.plot([lo, hi], [lo, hi], "--", color="grey", label="perfect")
    ax.set_xticks(stars, [f"{s:g}" for s in stars])
    ax.set_xlabel("true rating")
    ax.set_ylabel("ranking score" if scores else "predicted rating")
    ax.set_title(("Ranking score by" if scores else "Predicted vs") +
                 " true rating on the test split (boxes: quartiles, 5-95%)")
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


def score_histograms(held_out: np.ndarray, random_pairs: np.ndarray, path: str | Path) -> None:
    """A ranking model's scores for the test split's pairs against random (user, movie) pairs:
    the further apart, the better the model tells watched movies from the rest."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    both = np.concatenate([held_out, random_pairs])
    bins = np.linspace(float(np.percentile(both, 0.5)), float(np.percentile(both, 99.5)), 60)
    ax.hist(held_out, bins=bins, alpha=0.6, label="test pairs (held-out ratings)", density=True)
    ax.hist(random_pairs, bins=bins, alpha=0.6, label="random pairs", density=True)
    ax.set_xlabel("ranking score")
    ax.set_ylabel("density")
    ax.set_title("Scores: held-out test pairs vs random pairs")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
