"""The fast scorer and the top-n lists against the Keras model, pair by pair."""

import numpy as np
import pandas as pd
import pytest

from movierec.core.files import write_parquet
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.nets.keras_model import build_model, with_offset
from movierec.ranking.topn import recommend_all, recommend_block, top_n_of_scores, top_n_table

N_USERS, N_MOVIES = 41, 67


def spread_model(kind: str, seed: int = 1, scale: float = 0.7, latent_dim: int = 6,
                 hidden: int = 24):
    """A model whose weights are spread wider than Keras' initialisation, so that the side
    branch's inputs fall on both sides of elu's kink."""
    model = build_model(kind, N_USERS, N_MOVIES, latent_dim, hidden)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, scale, w.shape).astype("float32"))
    return with_offset(model, 3.5)


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


@pytest.mark.parametrize("kind", ["residual", "mf", "deep"])
def test_scores_equal_the_keras_model_on_every_pair(kind):
    model = spread_model(kind)
    expected = keras_scores(model)
    weights = scoring.from_model(model)
    users = np.arange(N_USERS)
    np.testing.assert_allclose(scoring.score_block(weights, users), expected, atol=2e-5)
    # The per-pair exp path (used when exp(U) exp(V) could overflow) and candidate re-scoring.
    np.testing.assert_allclose(scoring.score_block(weights, users, exact_exp=True), expected,
                               atol=2e-5)
    every = np.tile(np.arange(N_MOVIES), (N_USERS, 1))
    np.testing.assert_allclose(scoring.score_pairs(weights, users, every), expected, atol=2e-5)
    # Weights too large for exp(U) exp(V): both paths fall back to one exp per term.
    big = scoring.from_model(spread_model(kind, scale=5.0))
    assert not scoring.product_trick_is_exact(big, big.user_hidden(users)) or kind == "mf"
    huge = keras_scores(spread_model(kind, scale=5.0))
    tol = 2e-6 * np.abs(huge).max()  # float32 sums of terms this large
    np.testing.assert_allclose(scoring.score_block(big, users), huge, atol=tol)
    np.testing.assert_allclose(scoring.score_pairs(big, users, every), huge, atol=tol)


def test_a_trained_model_scores_as_keras_does(twin_30k):
    from movierec.core.config import TrainParams
    from movierec.data.preprocess import prepare
    from movierec.train.training import train

    prepared = prepare(twin_30k.ratings, twin_30k.movies, 0.2, 1)
    n_users, n_movies = len(prepared.users), len(prepared.movies)
    result = train(prepared.train, prepared.test, n_users, n_movies,
                   TrainParams(epochs=1, latent_dim=8, hidden_units=32))
    weights = scoring.from_model(result.model)
    users = np.arange(n_users)
    pairs = [np.repeat(users, n_movies).reshape(-1, 1),
             np.tile(np.arange(n_movies), n_users).reshape(-1, 1)]
    expected = result.model.predict(pairs, batch_size=65536, verbose=0).reshape(n_users, n_movies)
    np.testing.assert_allclose(scoring.score_block(weights, users), expected, atol=2e-5)


def test_block_size_and_padding_do_not_change_scores():
    weights = scoring.from_model(spread_model("residual"))
    whole = scoring.score_block(weights, np.arange(N_USERS))
    for size in (1, 3, 5, 16):
        parts = [scoring.score_block(weights, np.arange(s, min(N_USERS, s + size)))
                 for s in range(0, N_USERS, size)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_top_n_equals_a_full_sort_of_the_keras_scores_without_seen_movies():
    model = spread_model("residual", seed=4)
    expected = keras_scores(model)
    seen = random_seen()
    n = 7
    idx, val, _ = recommend_all(scoring.from_model(model), np.arange(N_USERS), seen, n,
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
    residual = scoring.from_model(spread_model("residual", seed=5))
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
    mf = scoring.from_model(spread_model("mf", seed=6))
    np.testing.assert_array_equal(recommend_all(mf, users, seen, 5, candidates=5)[0],
                                  recommend_all(mf, users, seen, 5)[0])


def test_table_is_long_in_movielens_ids_and_byte_identical(tmp_path):
    weights = scoring.from_model(spread_model("residual", seed=2))
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


def test_non_finite_weights_are_refused():
    model = spread_model("residual")
    layer = model.get_layer("movie_embedding")
    w = layer.get_weights()[0]
    w[3, 1] = np.nan
    layer.set_weights([w])
    with pytest.raises(scoring.ScoringError, match="movie_embedding weights hold NaN"):
        scoring.from_model(model)
