"""Rating-prediction metrics on plain arrays."""

from __future__ import annotations

import numpy as np


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"received {y_true.size} true and {y_pred.size} predicted ratings "
                         "(expected the same number)")
    if y_true.size == 0:
        raise ValueError("received no ratings (expected at least one)")
    return y_true, y_pred


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean((y_true - y_pred) ** 2))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(mse(y_true, y_pred)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def rating_metrics(y_true: np.ndarray, y_pred: np.ndarray, train_mean: float,
                   bias_pred: np.ndarray | None = None) -> dict:
    """The evaluate stage's report: the model's errors next to the baselines' (the global mean
    and, when given, the user + movie bias model's predictions ``bias_pred``)."""
    baseline = np.full(np.shape(y_true), train_mean, dtype=np.float64)
    report = {
        "mse": mse(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "n_test": int(np.size(y_true)),
        "global_mean": {
            "value": float(train_mean),
            "mse": mse(y_true, baseline),
            "rmse": rmse(y_true, baseline),
            "mae": mae(y_true, baseline),
        },
    }
    if bias_pred is not None:
        report["bias_baseline"] = {"mse": mse(y_true, bias_pred), "rmse": rmse(y_true, bias_pred),
                                   "mae": mae(y_true, bias_pred)}
    return report


def per_star(y_true: np.ndarray, y_pred: np.ndarray) -> list[dict]:
    """Count, mean prediction and RMSE for each true rating value (ascending)."""
    y_true, y_pred = _pair(y_true, y_pred)
    rows = []
    for star in np.unique(y_true):
        sel = y_true == star
        rows.append({"rating": float(star), "count": int(sel.sum()),
                     "mean_prediction": float(y_pred[sel].mean()),
                     "rmse": rmse(y_true[sel], y_pred[sel])})
    return rows
