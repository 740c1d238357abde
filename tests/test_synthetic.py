import numpy as np
import pandas as pd

from movierec import synthetic
from movierec.columns import GENRES_COL, MOVIE_COL, RATING_COL, TIMESTAMP_COL, TITLE_COL, USER_COL
from movierec.io import validate_ratings


def test_size_and_canonical_schema(twin_200k):
    r = twin_200k.ratings
    assert len(r) == 200_000
    assert list(r.columns) == [USER_COL, MOVIE_COL, RATING_COL, TIMESTAMP_COL]
    validate_ratings(r, "twin")  # passes the same checks as a user's file


def test_histogram_is_ml20m(twin_200k):
    counts = twin_200k.ratings[RATING_COL].value_counts().sort_index()
    assert counts.index.tolist() == synthetic.STARS.tolist()
    expected = synthetic.STAR_COUNTS / synthetic.STAR_COUNTS.sum() * len(twin_200k.ratings)
    np.testing.assert_allclose(counts.to_numpy(), expected, atol=1.0)
    assert abs(twin_200k.ratings[RATING_COL].mean() - 3.5255) < 0.002
    assert abs(twin_200k.ratings[RATING_COL].std() - 1.052) < 0.005


def test_users_have_at_least_20_ratings_with_ml20m_spread(twin_200k):
    per_user = twin_200k.ratings.groupby(USER_COL).size()
    assert per_user.min() >= 20
    assert len(per_user) == round(200_000 / 144.4)
    assert 55 <= per_user.median() <= 85  # ML-20M: 68
    assert 250 <= np.percentile(per_user, 90) <= 420  # ML-20M: 334
    # userIds are 1..N, as in MovieLens
    assert per_user.index.min() == 1 and per_user.index.max() == len(per_user)


def test_no_user_rates_a_movie_twice(twin_200k):
    assert not twin_200k.ratings.duplicated([USER_COL, MOVIE_COL]).any()


def test_ratings_per_movie_are_long_tailed(twin_200k):
    per_movie = twin_200k.ratings.groupby(MOVIE_COL).size()
    # ML-20M: mean 747.8 vs median 18 (41x). Small releases are flatter (ML-100K and ML-1M:
    # mean about 2.2x the median), and so are small twins; at 200k ratings expect 3x or more.
    assert per_movie.mean() > 3 * per_movie.median()
    assert np.percentile(per_movie, 99) > 20 * per_movie.median()
    assert per_movie.max() > 30 * per_movie.median()
    assert per_movie.min() >= 1


def test_movie_ids_sparse_and_movies_table_complete(twin_200k):
    movies = twin_200k.movies
    assert list(movies.columns) == [MOVIE_COL, TITLE_COL, GENRES_COL]
    assert movies[MOVIE_COL].is_unique and movies[MOVIE_COL].is_monotonic_increasing
    assert movies[MOVIE_COL].max() > 3 * len(movies)  # sparse, like ML-20M's 1..131262
    assert set(twin_200k.ratings[MOVIE_COL]) <= set(movies[MOVIE_COL])
    assert movies[TITLE_COL].str.match(r".+ \((19|20)\d\d\)$").all()
    known = set(synthetic.GENRES) | {"(no genres listed)"}
    assert set("|".join(movies[GENRES_COL]).split("|")) <= known


def test_timestamps_within_ml20m_span(twin_200k):
    ts = twin_200k.ratings[TIMESTAMP_COL]
    assert ts.min() >= synthetic.FIRST_TIMESTAMP and ts.max() <= synthetic.LAST_TIMESTAMP
    years = pd.to_datetime(ts, unit="s").dt.year
    assert years.nunique() >= 15  # spread over the two decades, not bunched


def test_same_seed_same_data_other_seed_other_data():
    a = synthetic.generate(5_000, seed=11)
    b = synthetic.generate(5_000, seed=11)
    c = synthetic.generate(5_000, seed=12)
    pd.testing.assert_frame_equal(a.ratings, b.ratings)
    pd.testing.assert_frame_equal(a.movies, b.movies)
    assert not a.ratings[RATING_COL].equals(c.ratings[RATING_COL])


def test_ratings_carry_planted_structure(twin_200k):
    # User and movie means explain part of the variance (unlike random ratings); a check on
    # the data alone, independent of the model.
    r = twin_200k.ratings
    rng = np.random.default_rng(0)
    held = rng.random(len(r)) < 0.2
    fit, test = r[~held], r[held]
    mu = fit[RATING_COL].mean()
    bu = (fit[RATING_COL] - mu).groupby(fit[USER_COL]).mean()
    bm = (fit[RATING_COL] - mu).groupby(fit[MOVIE_COL]).mean()
    pred = mu + test[USER_COL].map(bu).fillna(0) + test[MOVIE_COL].map(bm).fillna(0)
    biased = np.mean((test[RATING_COL] - pred.clip(0.5, 5)) ** 2)
    flat = np.mean((test[RATING_COL] - mu) ** 2)
    assert biased < 0.9 * flat
