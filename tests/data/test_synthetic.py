import numpy as np
import pandas as pd
import pytest

from movierec.core.columns import (
    GENRES_COL,
    MOVIE_COL,
    RATING_COL,
    TIMESTAMP_COL,
    TITLE_COL,
    USER_COL,
)
from movierec.data import synthetic
from movierec.data.tables import validate_ratings


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


def test_same_seed_same_tastes():
    a = synthetic.generate(5_000, seed=11).tastes
    b = synthetic.generate(5_000, seed=11).tastes
    c = synthetic.generate(5_000, seed=12).tastes
    np.testing.assert_array_equal(a.group, b.group)
    np.testing.assert_array_equal(a.movie_ids, b.movie_ids)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, c.weights)


def test_ratings_sorted_by_user_then_movie(twin_200k):
    r = twin_200k.ratings
    key = r[USER_COL].to_numpy(np.int64) * (r[MOVIE_COL].max() + 1) + r[MOVIE_COL].to_numpy()
    assert (np.diff(key) > 0).all()  # sorted, and no (user, movie) pair twice
    assert r.index.equals(pd.RangeIndex(len(r)))


def test_taste_weights_keep_the_popularity_of_each_movie():
    rng = np.random.default_rng(5)
    n_users, n_movies = 3_000, 800
    popularity = synthetic.sample_quantile_curve(rng, synthetic.MOVIE_QUANTILES, n_movies)
    genre_matrix = (rng.random((n_movies, len(synthetic.GENRES))) < synthetic.GENRE_RATES)
    factors = synthetic.latent_factors(rng, n_users, genre_matrix.astype(np.float64))
    counts = rng.integers(20, 400, n_users)
    weights = synthetic.selection_weights(popularity, factors, counts)
    assert weights.shape == (synthetic.TASTE_GROUPS, n_movies)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # Over all groups, weighted by their numbers of ratings, each movie keeps its popularity...
    per_group = np.bincount(factors.group, weights=counts, minlength=synthetic.TASTE_GROUPS)
    np.testing.assert_allclose(per_group / per_group.sum() @ weights,
                               popularity / popularity.sum(), rtol=1e-5)
    # ...while the groups disagree about which movies to watch.
    spread = np.log(weights).std(axis=0)
    assert np.median(spread) > 0.5


def _split_per_user(ratings, fraction, seed):
    """Each user's ratings split at random: ``fraction`` of them (rounded up) held out."""
    users = ratings[USER_COL].to_numpy() - 1
    order = np.lexsort((np.random.default_rng(seed).random(len(users)), users))
    per_user = np.bincount(users)
    first = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - first[users[order]]
    return rank < np.ceil(fraction * per_user[users])


def _precision_at_10(scores, train, test):
    """Mean precision@10 over users, ranking each user's movies that are not in train."""
    scores = np.where(train, -np.inf, scores)
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    return np.take_along_axis(test, top, axis=1).sum(axis=1).mean() / 10


@pytest.fixture(scope="module")
def held_out_200k(twin_200k):
    """User x movie matrices (bool) of the train 80% and the held-out 20% of each user."""
    r = twin_200k.ratings
    users = r[USER_COL].to_numpy() - 1
    movies = np.searchsorted(twin_200k.tastes.movie_ids, r[MOVIE_COL].to_numpy())
    held = _split_per_user(r, 0.2, seed=0)
    shape = (users.max() + 1, len(twin_200k.tastes.movie_ids))
    train, test = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    train[users[~held], movies[~held]] = True
    test[users[held], movies[held]] = True
    return train, test


def test_the_planted_tastes_beat_a_most_popular_list(twin_200k, held_out_200k):
    # Who rated what is personal: ranking each user's unseen movies by their taste group's
    # weights (the oracle) beats ranking them by popularity, clearly but moderately (real
    # personalised recommenders beat popularity by 1.3-1.8x). On a popularity-only twin the
    # oracle would be the popularity order itself.
    train, test = held_out_200k
    popular = _precision_at_10(np.broadcast_to(train.sum(axis=0), train.shape), train, test)
    tastes = twin_200k.tastes
    oracle = _precision_at_10(np.log(tastes.weights[tastes.group]), train, test)
    assert 1.3 * popular < oracle < 2.0 * popular, (oracle, popular)


def test_a_model_of_the_data_beats_a_most_popular_list(held_out_200k):
    # A check on the data alone: a rank-16 SVD of the train matrix (PureSVD) ranks held-out
    # movies better than popularity. On a twin whose choices follow popularity alone it does
    # worse than popularity (it measured 0.87x on the former twin).
    train, test = held_out_200k
    popular = _precision_at_10(np.broadcast_to(train.sum(axis=0), train.shape), train, test)
    u, s, vt = np.linalg.svd(train.astype(np.float64), full_matrices=False)
    svd = _precision_at_10((u[:, :16] * s[:16]) @ vt[:16], train, test)
    assert svd > 1.2 * popular, (svd, popular)


def test_users_rate_higher_what_their_group_leans_to(twin_200k):
    # One model for choice and rating: the movies a user's group leans to (its log weight
    # above the movie's mean over groups, so not popularity) get ratings above the user's and
    # the movie's means.
    r, tastes = twin_200k.ratings, twin_200k.tastes
    users = r[USER_COL].to_numpy() - 1
    movies = np.searchsorted(tastes.movie_ids, r[MOVIE_COL].to_numpy())
    log_w = np.log(tastes.weights)
    lean = log_w[tastes.group[users], movies] - log_w[:, movies].mean(axis=0)
    y = r[RATING_COL].to_numpy(np.float64)
    resid = y - y.mean()
    resid -= (np.bincount(users, resid) / np.bincount(users))[users]
    resid -= (np.bincount(movies, resid) / np.bincount(movies))[movies]
    assert np.corrcoef(lean, resid)[0, 1] > 0.15
