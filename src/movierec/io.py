"""Reading and writing tables and small files, atomically.

Every output goes to a temporary name in the same folder and is renamed into place only when
complete, so a killed stage leaves the previous file or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.columns import (
    GENRES_COL,
    MOVIE_COL,
    NO_GENRES,
    RATING_COL,
    RATING_MAX,
    RATING_MIN,
    RATING_STEP,
    RATINGS_COLUMNS,
    TIMESTAMP_COL,
    TITLE_COL,
    USER_COL,
)
from movierec.errors import DataError

# Canonical dtypes: MovieLens ids fit in int32 (ML-32M's largest movieId is 292,757).
RATINGS_DTYPES = {USER_COL: "int32", MOVIE_COL: "int32", RATING_COL: "float32",
                  TIMESTAMP_COL: "int64"}


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(path, columns=columns)


def write_json(obj: object, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def validate_ratings(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checks the canonical ratings table and returns it with canonical dtypes."""
    missing = [c for c in RATINGS_COLUMNS if c not in df.columns]
    if missing:
        got = ",".join(map(str, df.columns))
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} "
                        f"(expected columns {','.join(RATINGS_COLUMNS)}; got {got})")
    if len(df) == 0:
        raise DataError(f"{source}: no ratings (expected at least one row)")
    for col in RATINGS_COLUMNS:
        if df[col].dtype.kind in "iu":  # integer columns cannot hold a missing value
            continue
        bad = df[col].isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: row {row + 1}, column {col}: missing value "
                            "(expected a number)")
    rating = df[RATING_COL].to_numpy()
    # Half stars are exact in binary floating point: 2 * rating must be a whole number.
    doubled = rating * 2
    bad = (rating < RATING_MIN) | (rating > RATING_MAX) | (doubled != np.round(doubled))
    del doubled
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: row {row + 1}, column {RATING_COL}: value {float(rating[row])} "
                        f"(expected {RATING_MIN} to {RATING_MAX} in steps of {RATING_STEP})")
    for col in (USER_COL, MOVIE_COL):
        ids = df[col].to_numpy()
        bad = (ids < 0) | (ids > np.iinfo(np.int32).max)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: row {row + 1}, column {col}: value {int(ids[row])} "
                            "(expected a non-negative 32-bit integer id)")
    out = df[list(RATINGS_COLUMNS)]
    if any(str(out[c].dtype) != t for c, t in RATINGS_DTYPES.items()):
        out = out.astype(RATINGS_DTYPES)  # only when needed: a copy of 20M rows is 400 MB
    return out.reset_index(drop=True)


def placeholder_movies(movie_ids: np.ndarray) -> pd.DataFrame:
    """A movies table for ratings that came without titles."""
    ids = np.unique(movie_ids).astype("int32")
    return pd.DataFrame({MOVIE_COL: ids,
                         TITLE_COL: [f"Movie {i}" for i in ids],
                         GENRES_COL: NO_GENRES})
