"""Index users and movies to contiguous integers, shuffle, split. Vectorised throughout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from movierec.columns import (
    MOVIE_COL,
    MOVIE_IDX_COL,
    RATING_COL,
    USER_COL,
    USER_IDX_COL,
)
from movierec.errors import DataError


@dataclass(frozen=True)
class Prepared:
    train: pd.DataFrame  # user_idx, movie_idx, rating
    test: pd.DataFrame
    users: pd.DataFrame  # user_idx, userId (row i holds index i)
    movies: pd.DataFrame  # movie_idx, movieId (+ title, genres when known)


def index_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps ids to 0..n-1 in ascending id order; returns (codes, ids_by_code).

    ``ids_by_code[codes]`` gives back ``ids`` exactly.
    """
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int32), np.asarray(uniques)


def split_indices(n_rows: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffles row numbers with ``seed`` and cuts off the last ``test_fraction`` as test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} (expected a number between 0 and 1)")
    n_test = round(test_fraction * n_rows)
    if n_test < 1 or n_test > n_rows - 1:
        raise DataError(f"{n_rows} ratings with test_fraction={test_fraction} leave an empty "
                        "train or test split (expected at least one rating in each)")
    perm = np.random.default_rng(seed).permutation(n_rows)
    return perm[: n_rows - n_test], perm[n_rows - n_test:]


def prepare(ratings: pd.DataFrame, movies: pd.DataFrame, test_fraction: float,
            seed: int) -> Prepared:
    """Indexes ``ratings`` and splits it; ``movies`` supplies titles for the movie mapping."""
    user_codes, user_ids = index_ids(ratings[USER_COL].to_numpy())
    movie_codes, movie_ids = index_ids(ratings[MOVIE_COL].to_numpy())
    table = pd.DataFrame({USER_IDX_COL: user_codes, MOVIE_IDX_COL: movie_codes,
                          RATING_COL: ratings[RATING_COL].to_numpy(dtype=np.float32)})
    train_rows, test_rows = split_indices(len(table), test_fraction, seed)
    users = pd.DataFrame({USER_IDX_COL: np.arange(len(user_ids), dtype=np.int32),
                          USER_COL: user_ids.astype(np.int32)})
    movie_map = pd.DataFrame({MOVIE_IDX_COL: np.arange(len(movie_ids), dtype=np.int32),
                              MOVIE_COL: movie_ids.astype(np.int32)})
    # Only rated movies get an index; titles come along for reports, unknown ones stay empty.
    movie_map = movie_map.merge(movies, on=MOVIE_COL, how="left", validate="one_to_one")
    return Prepared(train=table.iloc[train_rows].reset_index(drop=True),
                    test=table.iloc[test_rows].reset_index(drop=True),
                    users=users, movies=movie_map)
