"""Baselines every result is read against: the global mean, and user + movie biases.

The bias model predicts ``mu + b_user + b_movie`` and is fitted by alternating least squares
on the training split, each bias shrunk towards 0 by an L2 penalty (Koren's "baseline
predictors"; Surprise's ``BaselineOnly`` with ALS uses reg_user=15, reg_movie=10, 10 epochs,
the defaults here). With every other bias fixed, each one has a closed form:

    b_movie[i] = sum over i's ratings of (r - mu - b_user[u]) / (reg_movie + n_i)
    b_user[u]  = sum over u's ratings of (r - mu - b_movie[i]) / (reg_user + n_u)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Biases:
    mean: float
    user: np.ndarray  # (n_users,)
    movie: np.ndarray  # (n_movies,)

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        return self.mean + self.user[users] + self.movie[movies]


def fit_biases(users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, n_users: int,
               n_movies: int, reg_user: float = 15.0, reg_movie: float = 10.0,
               epochs: int = 10) -> Biases:
    """Regularised user and movie biases by alternating least squares (movie step first)."""
    if reg_user < 0 or reg_movie < 0 or epochs < 1:
        raise ValueError(f"fit_biases: received reg_user={reg_user}, reg_movie={reg_movie}, "
                         f"epochs={epochs} (expected regularisation >= 0 and epochs >= 1)")
    r = np.asarray(ratings, dtype=np.float64)
    mean = float(r.mean())
    n_u = np.bincount(users, minlength=n_users)
    n_m = np.bincount(movies, minlength=n_movies)
    b_u = np.zeros(n_users)
    b_m = np.zeros(n_movies)
    residual = r - mean
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(epochs):
            b_m = np.bincount(movies, residual - b_u[users], n_movies) / (reg_movie + n_m)
            b_u = np.bincount(users, residual - b_m[movies], n_users) / (reg_user + n_u)
    # An id without training ratings and no regularisation divides 0 by 0: no evidence, no bias.
    return Biases(mean, np.nan_to_num(b_u), np.nan_to_num(b_m))
