"""The top-n lists: a full sort of the Keras model's scores without the user's seen movies,
deterministic ties, candidate retrieval, and the long table (the scorer itself is checked
against Keras in tests/nets/test_parity.py)."""

import numpy as np
import pandas as pd
import pytest
from support.nets import saved_form, scorer, spec_of

from movierec.core.files import write_parquet
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.ranking.topn import recommend_all, recommend_block, top_n_of_scores, top_n_table

N_USERS, N_MOVIES = 41, 67


def spread_model(kind: str, seed: int = 1):
    """A saved-form rating model (mean 3.5) with weights spread wider than Keras'
    initialisation, and its scorer."""
    spec = spec_of(kind, N_USERS, N_MOVIES, 6, 24, train_mean=3.5)
    model = saved_form(spec, seed, scale=0.7)
    return model, scorer(model, spec)


def keras_scores(model) -> np.ndarray:
    users = np.repeat(np.arange(N_USERS), N_MOVIES).reshape(-1, 1)
    movies = np.tile(np.arange(N_MOVIES), N_USERS).reshape(-1, 1)
    out = model.predict([users, movies], batch_size=8192, verbose=0)
    return np.asarray(out).reshape(N_USERS, N_MOVIES)


def random_seen(seed: int = 0, per_user: int = 9) -> Seen:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N_USERS), per_user)
    movies = rng.integers(0, N_MOVIES - 5, users.size)  # the last 5 movies: not in train
    return Seen.from_pairs(users, movies, N_USERS, N_MOVIES)


def test_top_n_equals_a_full_sort_of_the_keras_scores_without_seen_movies():
    model, weights = spread_model("residual", seed=4)
    expected = keras_scores(model)
    seen = random_seen()
    n = 7
    idx, val, _ = recommend_all(weights, np.arange(N_USERS), seen, n,
                                block_users=16)
    for u in range(N_USERS):
        allowed = [m for m in range(N_MOVIES) if seen.in_train[m] and m not in set(seen.of(u))]
        best = sorted(allowed, key=lambda m: (-expected[u, m], m))[:n]
        # Scores within float rounding of each other could swap; none are that close here.
        assert idx[u].tolist() == best
        np.testing.assert_allclose(val[u], expected[u, best], atol=2e-5)
        assert not set(idx[u]) & set(seen.of(u))
        assert seen.in_train[idx[u]].all()


def test_ties_go_to_the_smaller_movie_index_and_short_lists_are_padded():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.5]], np.float32)
    seen = Seen.from_pairs(np.array([0]), np.array([2]), 1, 6)  # movie 2 is seen
    seen.in_train[:] = True
    idx, val = top_n_of_scores(scores, np.array([0]), seen, 3)
    assert idx.tolist() == [[1, 4, 3]]
    idx, val = top_n_of_scores(scores, np.array([0]), seen, 8)
    assert idx.tolist() == [[1, 4, 3, 0, 5, -1, -1, -1]]
    assert np.isnan(val[0, 5:]).all()


def test_non_finite_scores_are_an_error():
    seen = Seen.from_pairs(np.array([0]), np.array([0]), 1, 3)
    with pytest.raises(scoring.ScoringError, match="NaN or infinite"):
        top_n_of_scores(np.array([[1.0, np.nan, 2.0]], np.float32), np.array([0]), seen, 2)


def test_candidates_retrieve_then_rescore_exactly():
    residual = spread_model("residual", seed=5)[1]
    seen = random_seen(1)
    users = np.arange(N_USERS)
    exact, exact_val, _ = recommend_all(residual, users, seen, 5)
    # Every movie as a candidate: the same lists as exact scoring.
    full, full_val, _ = recommend_all(residual, users, seen, 5, candidates=N_MOVIES)
    np.testing.assert_array_equal(full, exact)
    np.testing.assert_allclose(full_val, exact_val, atol=2e-5)
    # Few candidates: every list is a subset of the dot-product branch's top candidates.
    few, _, _ = recommend_all(residual, users, seen, 5, candidates=8)
    pool, _ = top_n_of_scores(residual.main_scores(users), users, seen, 8)
    for u in users:
        assert set(few[u]) <= set(pool[u])
    assert (few != exact).any()  # with a strong side branch, retrieval does miss some
    # For the dot-product model alone, retrieval is the exact ranking.
    mf = spread_model("mf", seed=6)[1]
    np.testing.assert_array_equal(recommend_all(mf, users, seen, 5, candidates=5)[0],
                                  recommend_all(mf, users, seen, 5)[0])


def test_table_is_long_in_movielens_ids_and_byte_identical(tmp_path):
    weights = spread_model("residual", seed=2)[1]
    seen = random_seen(2)
    users = np.arange(N_USERS)
    user_ids = np.arange(N_USERS) * 10 + 1
    movie_ids = np.arange(N_MOVIES) * 3 + 2
    files = []
    for i in range(2):
        idx, val, _ = recommend_all(weights, users, seen, 4)
        table = top_n_table(users, idx, val, user_ids, movie_ids)
        files.append(tmp_path / f"top_{i}.parquet")
        write_parquet(table, files[-1])
    assert files[0].read_bytes() == files[1].read_bytes()
    table = pd.read_parquet(files[0])
    assert list(table.columns) == ["userId", "rank", "movieId", "score"]
    assert len(table) == N_USERS * 4
    assert table.groupby("userId")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4]).all()
    assert set(table["movieId"]) <= set(movie_ids)
    first = recommend_block(weights, np.array([0]), seen, 4)[0][0]
    assert table[table.userId == 1]["movieId"].tolist() == movie_ids[first].tolist()


