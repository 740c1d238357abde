"""The ingest stage's sources: the synthetic twin, a MovieLens release, or a user's file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.core.columns import MOVIE_COL, RATING_COL, USER_COL
from movierec.core.config import DataParams
from movierec.core.errors import DataError
from movierec.core.releases import Release, by_sha256, release
from movierec.data import synthetic
from movierec.data.download import sha256_of
from movierec.data.readers import read_ratings_path, read_zip


def check_release(ratings: pd.DataFrame, rel: Release, source: str) -> str:
    """Compares what was read with the release's published counts and rating scale."""
    if rel.whole_stars:
        stars = ratings[RATING_COL].to_numpy()
        bad = np.flatnonzero(stars != np.round(stars))
        if len(bad):
            raise DataError(f"{source}: row {bad[0] + 1}, column rating: value "
                            f"{float(stars[bad[0]])} (expected whole stars 1 to 5 in {rel.name})")
    n_users = int(ratings[USER_COL].nunique())
    if (len(ratings), n_users) != (rel.ratings, rel.users):
        raise DataError(f"{source}: read {len(ratings):,} ratings from {n_users:,} users "
                        f"(expected {rel.ratings:,} from {rel.users:,}, as published for "
                        f"{rel.name})")
    return (f"{rel.name}: {len(ratings):,} ratings and {n_users:,} users, "
            "as published by GroupLens")


def load_release(name: str, zip_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """A downloaded, verified release zip: its ratings and movies, checked against the counts."""
    rel = release(name)
    ratings, movies, source = read_zip(
        zip_path, rel.ratings_member, rel.ratings_format, rel.movies_member, rel.movies_format,
        rel.movies_encoding)
    return ratings, movies, f"{source.name} ({source.format}); " + check_release(
        ratings, rel, source.name)


def load_file(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Any supported file or zip; a zip that is a known release is checked like a download."""
    ratings, movies, source = read_ratings_path(path)
    note = f"{source.name} ({source.format})"
    if zipfile.is_zipfile(path):
        rel = by_sha256(sha256_of(path))
        if rel is not None:
            note += "; " + check_release(ratings, rel, source.name)
    return ratings, movies, note


def drop_duplicate_pairs(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keeps the last rating of each (user, movie) pair, in file order; returns how many went.

    A user rates a movie once in every MovieLens release; in a file of one's own a repeated
    pair is most often a re-rating appended later, so the last one wins. A duplicate left in
    would be counted twice by training and could sit in both the train and the test split.
    """
    key = (ratings[USER_COL].to_numpy(np.int64) << 32) | ratings[MOVIE_COL].to_numpy(np.int64)
    repeated = pd.Series(key).duplicated(keep="last").to_numpy()
    n = int(repeated.sum())
    if n == 0:
        return ratings, 0
    return ratings.loc[~repeated].reset_index(drop=True), n


def load_dataset(params: DataParams, download_dir: str | Path
                 ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Returns the canonical (ratings, movies) tables for ``params.dataset`` and a log note
    (which says how many duplicate (user, movie) ratings were dropped, if any)."""
    ratings, movies, note = _load(params, download_dir)
    ratings, n = drop_duplicate_pairs(ratings)
    if n:
        note += (f"; dropped {n:,} repeated (user, movie) rating(s), keeping the last of "
                 "each pair")
    return ratings, movies, note


def _load(params: DataParams, download_dir: str | Path
          ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if params.dataset == "synthetic":
        twin = synthetic.generate(params.synthetic.n_ratings, params.synthetic.seed)
        return twin.ratings, twin.movies, (f"synthetic twin of ML-20M, seed "
                                           f"{params.synthetic.seed}")
    if params.dataset == "file":
        return load_file(params.path)
    zip_path = Path(download_dir) / f"{params.dataset}.zip"
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: missing (expected the download stage to have fetched "
                        f"{params.dataset}; run `dvc repro`)")
    return load_release(params.dataset, zip_path)

