"""What is measured after each epoch of a training run: the test split's figures (only
reported, never deciding anything) and the validation part's, which early stopping reads.

The rating objective is scored by MSE (and the loss: MSE plus the L2 terms); the ranking
objectives by NDCG@k of full-catalogue top-k lists (``probes``) and their loss on held-out
pairs with negatives drawn once.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from movierec.core.columns import MOVIE_IDX_COL, RATING_COL, USER_IDX_COL
from movierec.core.config import TrainParams
from movierec.nets import scoring
from movierec.nets.keras_model import weights_of
from movierec.train import objectives
from movierec.train.negatives import NegativeSampler
from movierec.train.objectives import epoch_data
from movierec.train.pools import Pools
from movierec.train.probes import RankingProbe
from movierec.train.steps import TrainLoop

# The per-epoch curves (plots/training.csv): the rating objective's, as the tutorial draws
# them, and the ranking objectives' (the loss, and NDCG@k of full-catalogue top-k lists).
HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "train_mse", "test_mse")
VAL_COLUMNS = ("val_loss", "val_mse")
RANKING_HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "test_ndcg")
RANKING_VAL_COLUMNS = ("val_loss", "val_ndcg")
# Seed of the negatives drawn once for the held-out parts' per-epoch loss (fixed, so that the
# curve moves with the weights only).
HELD_OUT_NEGATIVES_SEED = 0
# The softmax's held-out loss scores each pair against a whole pool: a seeded sample of at most
# this many pairs (the same every epoch) keeps it a small part of an epoch on big data.
SOFTMAX_HELD_OUT_PAIRS = 50_000


def _as_tensors(df: pd.DataFrame, mu: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    return (tf.constant(df[USER_IDX_COL].to_numpy(np.int32)),
            tf.constant(df[MOVIE_IDX_COL].to_numpy(np.int32)),
            tf.constant(df[RATING_COL].to_numpy(np.float32) - np.float32(mu)))


def ids_of(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The (user, movie) indices of ``df``'s ratings."""
    return df[USER_IDX_COL].to_numpy(), df[MOVIE_IDX_COL].to_numpy()


def _held_out_loss(loop: TrainLoop, fit_df: pd.DataFrame, df: pd.DataFrame,
                   params: TrainParams, n_users: int, n_movies: int):
    """A function giving a ranking objective's loss on held-out pairs ``df``: each pair a
    positive, with ``params.negatives`` negatives drawn once (never a movie the user rated in
    the fit data or in ``df``; for softmax, pools drawn once, such movies masked), plus the L2
    terms."""
    users, movies = (np.concatenate(p) for p in zip(ids_of(fit_df), ids_of(df), strict=True))
    sampler = NegativeSampler(users, movies, n_users, n_movies, params.negative_sampling)
    if params.objective == "softmax":
        held_users, held_movies = ids_of(df)
        if len(df) > SOFTMAX_HELD_OUT_PAIRS:  # every pair costs a whole pool's scores
            keep = np.sort(np.random.default_rng(HELD_OUT_NEGATIVES_SEED).choice(
                len(df), SOFTMAX_HELD_OUT_PAIRS, replace=False))
            held_users, held_movies = held_users[keep], held_movies[keep]
        pools = Pools(sampler, held_movies, n_movies, params.negatives, params.batch_size,
                      HELD_OUT_NEGATIVES_SEED, sampled=params.pool == "sampled",
                      batch_negatives=params.batch_negatives)
        u, m = (tf.constant(a.astype(np.int32)) for a in (held_users, held_movies))

        def pooled() -> float:
            return loop.pooled_loss(u, m, pools) + loop.penalty(*ids_of(df))
        return pooled
    data = epoch_data(params.objective, *ids_of(df), np.zeros(len(df), np.float32),
                      np.random.default_rng(HELD_OUT_NEGATIVES_SEED), sampler, params.negatives)
    u, m = tf.constant(data.users), tf.constant(data.movies)
    neg = tf.constant(data.negatives)

    def loss() -> float:
        negative_scores = loop.predict(u, neg) if params.objective == "bpr" else None
        return (objectives.mean_loss(params.objective, loop.predict(u, m), data.targets,
                                     negative_scores) + loop.penalty(*ids_of(df)))
    return loss


def _mse_scorer(loop: TrainLoop, df: pd.DataFrame, mu: float):
    """A function giving (MSE, loss) on ``df`` at the loop's current weights."""
    users, movies, y = _as_tensors(df, mu)
    target = y.numpy().astype(np.float64)
    ids = (users.numpy(), movies.numpy())

    def score() -> tuple[float, float]:
        error = float(np.mean((loop.predict(users, movies) - target) ** 2))
        return error, error + loop.penalty(*ids)
    return score


class Scores:
    """What is measured after each epoch: the history row's values past the train loss, and
    the early-stopping criterion (lower is better) when there is a validation part."""

    def __init__(self, loop: TrainLoop, centred: keras.Model, fit_df: pd.DataFrame,
                 val_df: pd.DataFrame | None, test_df: pd.DataFrame, mu: float,
                 params: TrainParams, n_users: int, n_movies: int):
        self.ranks = params.ranks
        self.centred = centred
        self.spec = loop.split.spec
        self.k = params.ndcg_k
        if self.ranks:
            # NDCG@k of top-k lists over the catalogue minus the movies the user rated before
            # the split scored: the fit part for the validation part; the whole train split
            # (fit and validation) for the test split, as evaluate ranks it.
            train_df = fit_df if val_df is None else pd.concat([fit_df, val_df])
            def probe(known: pd.DataFrame, df: pd.DataFrame) -> RankingProbe:
                return RankingProbe(*ids_of(known), *ids_of(df), n_users, n_movies,
                                    params.ndcg_k, params.ndcg_users, params.seed)
            def loss(df: pd.DataFrame):
                return _held_out_loss(loop, fit_df, df, params, n_users, n_movies)
            self.test = (probe(train_df, test_df), loss(test_df))
            self.val = ((probe(fit_df, val_df), loss(val_df)) if val_df is not None
                        else None)
        else:
            self.test = _mse_scorer(loop, test_df, mu)
            self.val = _mse_scorer(loop, val_df, mu) if val_df is not None else None

    @property
    def columns(self) -> list[str]:
        if self.ranks:
            return list(RANKING_HISTORY_COLUMNS) + (list(RANKING_VAL_COLUMNS) if self.val else [])
        return list(HISTORY_COLUMNS) + (list(VAL_COLUMNS) if self.val else [])

    def after_epoch(self, train_loss: float, train_penalty: float
                    ) -> tuple[list[float], float | None, str]:
        """(the row after the epoch number, criterion, a note for the log)."""
        if self.ranks:
            # Once per epoch, for both probes.
            weights = scoring.from_weights(self.spec, weights_of(self.centred, self.spec))
            test = self.test[0].ndcg(weights)
            row = [train_loss + train_penalty, self.test[1](), test]
            if self.val is None:
                return row, None, f"train loss {row[0]:.4f}, test NDCG@{self.k} {test:.4f}"
            val = self.val[0].ndcg(weights)
            return ([*row, self.val[1](), val], -val, f"train loss {row[0]:.4f}, validation "
                    f"NDCG@{self.k} {val:.4f}, test NDCG@{self.k} {test:.4f}")
        test_mse, test_loss = self.test()
        row = [train_loss + train_penalty, test_loss, train_loss, test_mse]
        note = f"train MSE {train_loss:.4f}"
        criterion = None
        if self.val is not None:
            val_mse, val_loss = self.val()
            row += [val_loss, val_mse]
            criterion = val_mse
            note += f", validation MSE {val_mse:.4f}"
        return row, criterion, note + f", test MSE {test_mse:.4f}"
