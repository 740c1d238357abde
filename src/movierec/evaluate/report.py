"""The evaluate stage's report: the model on the test split beside the baselines, and the
figures, from tables already read (``stages/evaluate.py`` reads and writes the files).

A rating model gets the rating metrics (beside the global mean and the user + movie biases)
and the ranking section; a ranking model (bce, bpr) outputs scores, not ratings, so it gets
the ranking section only, and its figures show scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.core.columns import MOVIE_IDX_COL, RATING_COL, USER_IDX_COL
from movierec.core.config import EvaluateParams
from movierec.evaluate import plots
from movierec.evaluate.baselines import Biases, fit_biases
from movierec.evaluate.metrics import per_star, rating_metrics
from movierec.evaluate.ranking_report import ranking_section
from movierec.nets.scoring import ScoringWeights, predict_pairs
from movierec.nets.spec import NetSpec

# The ranking rows printed, in order (metrics/test.json holds them all).
RANKED = ("model", "popularity", "biases", "ease")


@dataclass(frozen=True)
class Inputs:
    """What evaluate reads: the model (its spec, and its scorer, which gives the Keras model's
    outputs), the splits, the recommend stage's lists and the index -> MovieLens id maps."""

    scorer: ScoringWeights
    spec: NetSpec
    train: pd.DataFrame  # user_idx, movie_idx, rating
    test: pd.DataFrame
    top_n: pd.DataFrame
    top_n_source: str  # the lists' path, for error messages
    user_ids: np.ndarray
    movie_ids: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    report: dict  # metrics/test.json
    per_star: pd.DataFrame  # plots/per_star.csv
    y_true: np.ndarray
    y_pred: np.ndarray  # ratings, or a ranking model's scores


def fit_bias_baseline(inputs: Inputs, params: EvaluateParams) -> Biases:
    """The user + movie bias model on the model's own train split and index."""
    train = inputs.train
    return fit_biases(train[USER_IDX_COL].to_numpy(), train[MOVIE_IDX_COL].to_numpy(),
                      train[RATING_COL].to_numpy(), inputs.spec.n_users, inputs.spec.n_movies,
                      params.bias_reg_user, params.bias_reg_movie, params.bias_epochs)


def evaluate(inputs: Inputs, params: EvaluateParams) -> Evaluation:
    """The report and the per-star table."""
    spec, test = inputs.spec, inputs.test
    y_true = test[RATING_COL].to_numpy()
    y_pred = predict(inputs.scorer, test)
    biases = fit_bias_baseline(inputs, params)
    if spec.predicts_ratings:
        bias_pred = biases.predict(test[USER_IDX_COL].to_numpy(), test[MOVIE_IDX_COL].to_numpy())
        report = rating_metrics(y_true, y_pred, spec.train_mean, bias_pred)
    else:
        report = {"objective": spec.objective, "n_test": len(test),
                  "rating_metrics": f"none: trained with train.objective={spec.objective}, the "
                                    "model outputs a ranking score, not a rating"}
    report["ranking"] = ranking_section(inputs.train, test, inputs.top_n, inputs.top_n_source,
                                        inputs.user_ids, inputs.movie_ids, biases.movie, params)
    stars = per_star(y_true, y_pred)
    if not spec.predicts_ratings:  # the mean score per star stays; an RMSE of scores is moot
        stars = [{k: v for k, v in row.items() if k != "rmse"} for row in stars]
    return Evaluation(report, pd.DataFrame(stars), y_true, y_pred)


@dataclass(frozen=True)
class FigurePaths:
    loss: Path
    mse: Path  # a ranking model's per-epoch NDCG takes this figure's place
    by_star: Path
    histogram: Path


def draw_figures(inputs: Inputs, result: Evaluation, history: pd.DataFrame,
                 paths: FigurePaths) -> None:
    """The tutorial's two curves and the two pictures of predictions against truth."""
    spec = inputs.spec
    if spec.predicts_ratings:
        plots.curve(history, "loss", paths.loss, "MSE loss (centred ratings)")
        plots.curve(history, "mse", paths.mse, "mean squared error")
        plots.predicted_by_star(result.y_true, result.y_pred, paths.by_star)
        plots.rating_histograms(result.y_true, result.y_pred, paths.histogram)
        return
    plots.curve(history, "loss", paths.loss, f"{spec.objective} loss")
    plots.curve(history, "ndcg", paths.mse, "NDCG@k, full catalogue (train.ndcg_k)")
    plots.predicted_by_star(result.y_true, result.y_pred, paths.by_star, scores=True)
    plots.score_histograms(result.y_pred, predict(inputs.scorer, random_pairs(inputs)),
                           paths.histogram)


def epoch_curves(history: pd.DataFrame, spec: NetSpec) -> pd.DataFrame:
    """MSE per epoch for a rating model, NDCG@k for a ranking model (which has no train NDCG),
    as plots/curves.csv: the same columns (epoch, train, validation, test) for every run, so
    that `dvc plots` never reports the plot missing; a curve the run lacks is NaN (not drawn)."""
    metric = "mse" if spec.predicts_ratings else "ndcg"
    out = pd.DataFrame({"epoch": history["epoch"].astype(int)})
    for part, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        column = f"{prefix}_{metric}"
        out[part] = history[column].to_numpy() if column in history else np.nan
    return out


def ranking_bars(report: dict) -> pd.DataFrame:
    """The ranking rows side by side, one bar per (metric, row), as plots/ranking.csv."""
    rank = report["ranking"]
    names = {"ndcg": "NDCG", "precision": "precision", "recall": "recall", "map": "MAP"}
    return pd.DataFrame([{"bar": f"{label}@{rank['k']} {name}", "value": rank[name][metric]}
                         for metric, label in names.items() for name in RANKED])


def predict(scorer: ScoringWeights, pairs: pd.DataFrame) -> np.ndarray:
    """The model's output for the (user_idx, movie_idx) rows of ``pairs``."""
    return predict_pairs(scorer, pairs[USER_IDX_COL].to_numpy(), pairs[MOVIE_IDX_COL].to_numpy())


def random_pairs(inputs: Inputs, seed: int = 0) -> pd.DataFrame:
    """As many random (user, train movie) pairs as the test split has, to contrast a ranking
    model's scores of held-out pairs with."""
    rng = np.random.default_rng(seed)
    n = len(inputs.test)
    return pd.DataFrame({USER_IDX_COL: rng.integers(0, inputs.spec.n_users, n),
                         MOVIE_IDX_COL: rng.choice(np.unique(inputs.train[MOVIE_IDX_COL]), n)})


def summary_lines(report: dict, spec: NetSpec) -> list[str]:
    """What the stage prints: the errors beside the baselines, each ranking row, and whether
    the model beats the most-popular list."""
    if spec.predicts_ratings:
        lines = [f"evaluate: test MSE {report['mse']:.4f}, RMSE {report['rmse']:.4f}, MAE "
                 f"{report['mae']:.4f} on {report['n_test']:,} ratings; baselines: global mean "
                 f"MSE {report['global_mean']['mse']:.4f}, user + movie biases MSE "
                 f"{report['bias_baseline']['mse']:.4f}"]
    else:
        lines = [f"evaluate: a {spec.objective} model scores pairs, it does not predict "
                 "ratings; no rating metrics"]
    rank = report["ranking"]
    for name in RANKED:
        r = rank[name]
        lines.append(f"evaluate: ranking@{rank['k']} over {rank['users']:,} users, {name}: "
                     f"precision {r['precision']:.4f}, recall {r['recall']:.4f}, NDCG "
                     f"{r['ndcg']:.4f}, MAP {r['map']:.4f}")
    fit = rank["ease_fit"]
    tried = ", ".join(f"{lam} ({ndcg:.4f})" for lam, ndcg in fit["holdout_ndcg"].items())
    lines.append(f"evaluate: EASE on the {fit['movies']:,} most-rated of {fit['movies_in_train']:,}"
                 f" train movies, lambda {fit['lambda']:g}"
                 + (f", chosen by NDCG@{rank['k']} on a hold-out of the train split: {tried}"
                    if tried else ""))
    for name, whose, short in (("popularity", "the most-popular list's", "popularity"),
                               ("ease", "EASE's", "EASE")):
        ratio = rank["model"]["ndcg"] / max(rank[name]["ndcg"], 1e-12)
        lines.append(f"evaluate: the model's NDCG@{rank['k']} is {ratio:.2f}x {whose}: "
                     + (f"it beats {short}" if ratio > 1 else f"it does NOT beat {short}"))
    return lines
