"""The ingest stage's sources: the synthetic twin or a ratings file the user already has."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from movierec import synthetic
from movierec.columns import MOVIE_COL
from movierec.config import DataParams
from movierec.errors import DataError
from movierec.io import placeholder_movies, read_movies_csv, read_ratings_csv


def load_file(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A GroupLens-format ratings.csv, plus the movies.csv beside it when there is one."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data.path: {path} is a folder (expected a ratings.csv file)")
    ratings = read_ratings_csv(path)
    movies_file = path.with_name("movies.csv")
    if movies_file.is_file() and movies_file != path:
        movies = read_movies_csv(movies_file)
        # Rated movies missing from movies.csv still need a row, so that every id has a title.
        unknown = ~ratings[MOVIE_COL].drop_duplicates().isin(movies[MOVIE_COL])
        if unknown.any():
            extra = placeholder_movies(ratings[MOVIE_COL].drop_duplicates()[unknown].to_numpy())
            movies = pd.concat([movies, extra], ignore_index=True)
    else:
        movies = placeholder_movies(ratings[MOVIE_COL].to_numpy())
    return ratings, movies


def load_dataset(params: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns the canonical (ratings, movies) tables for ``params.dataset``."""
    if params.dataset == "synthetic":
        twin = synthetic.generate(params.synthetic.n_ratings, params.synthetic.seed)
        return twin.ratings, twin.movies
    if params.dataset == "file":
        return load_file(params.path)
    raise DataError(f"data.dataset = {params.dataset!r} (expected synthetic or file)")
