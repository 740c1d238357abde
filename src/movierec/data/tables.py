"""The canonical ratings and movies tables: checked, with canonical dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from movierec.core.columns import (
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
from movierec.core.errors import DataError

# Canonical dtypes: MovieLens ids fit in int32 (ML-32M's largest movieId is 292,757).
RATINGS_DTYPES = {USER_COL: "int32", MOVIE_COL: "int32", RATING_COL: "float32",
                  TIMESTAMP_COL: "int64"}


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
