"""Index users and movies to contiguous integers, then split (movierec.data.splits). Vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from movierec.core.columns import (
    MOVIE_COL,
    MOVIE_IDX_COL,
    RATING_COL,
    TIMESTAMP_COL,
    USER_COL,
    USER_IDX_COL,
)
from movierec.data.splits import split_rows


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


def prepare(ratings: pd.DataFrame, movies: pd.DataFrame, test_fraction: float,
            seed: int, *, split: str = "random") -> Prepared:
    """Indexes ``ratings`` and splits it; ``movies`` supplies titles for the movie mapping.

    ``split`` is one of ``core.config.SPLITS``; ``user_temporal`` needs a timestamp column.
    """
    user_codes, user_ids = index_ids(ratings[USER_COL].to_numpy())
    movie_codes, movie_ids = index_ids(ratings[MOVIE_COL].to_numpy())
    table = pd.DataFrame({USER_IDX_COL: user_codes, MOVIE_IDX_COL: movie_codes,
                          RATING_COL: ratings[RATING_COL].to_numpy(dtype=np.float32)})
    # One code per id, so the codes group the ratings exactly as the ids do.
    timestamps = ratings[TIMESTAMP_COL].to_numpy() if TIMESTAMP_COL in ratings else None
    train_rows, test_rows = split_rows(split, user_codes, movie_codes, timestamps,
                                       test_fraction, seed)
    users = pd.DataFrame({USER_IDX_COL: np.arange(len(user_ids), dtype=np.int32),
                          USER_COL: user_ids.astype(np.int32)})
    movie_map = pd.DataFrame({MOVIE_IDX_COL: np.arange(len(movie_ids), dtype=np.int32),
                              MOVIE_COL: movie_ids.astype(np.int32)})
    # Only rated movies get an index; titles come along for reports, unknown ones stay empty.
    movie_map = movie_map.merge(movies, on=MOVIE_COL, how="left", validate="one_to_one")
    return Prepared(train=table.iloc[train_rows].reset_index(drop=True),
                    test=table.iloc[test_rows].reset_index(drop=True),
                    users=users, movies=movie_map)
