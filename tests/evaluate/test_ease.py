"""EASE: a hand-solved fit, its optimality conditions, and its metrics against an independent
dense float64 computation on a small twin."""

import math

import numpy as np
import pytest

from movierec.data import sparse
from movierec.data.preprocess import prepare
from movierec.evaluate.ease import (
    Catalogue,
    _mirror_upper,
    choose_lambda,
    ease_lists,
    fit,
    gram,
    top_k,
)
from movierec.ranking import metrics as ranking
from movierec.ranking.protocol import evaluation_users


def _csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    users = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return sparse.csr_by_user(users, np.concatenate([np.array(r, np.int64) for r in rows]),
                              len(rows))


def test_fit_by_hand():
    # X = [[1,1,0],[0,1,1],[1,1,1]]: X^T X + 1 I = [[3,2,1],[2,4,2],[1,2,3]], whose inverse is
    # [[8,-4,0],[-4,8,-4],[0,-4,8]] / 16 (determinant 16); every diagonal entry is 1/2, so
    # B[i, j] = -P[i, j] / P[j, j] = [[0, .5, 0], [.5, 0, .5], [0, .5, 0]].
    indptr, indices = _csr([[0, 1], [1, 2], [0, 1, 2]])
    catalogue = Catalogue.build(indptr, indices, 3, 10)
    g = gram(catalogue)
    np.testing.assert_array_equal(g, [[2, 2, 1], [2, 3, 2], [1, 2, 2]])
    b = fit(g, 1.0)
    np.testing.assert_allclose(b, [[0, .5, 0], [.5, 0, .5], [0, .5, 0]], atol=1e-6)
    np.testing.assert_array_equal(g, [[2, 2, 1], [2, 3, 2], [1, 2, 2]])  # left unchanged
    # User 0 scores [.5, .5, .5] and has rated 0 and 1: only movie 2 is left; user 2 has
    # rated everything: an empty list.
    lists = top_k(b, catalogue, np.array([0, 2]), 2)
    assert lists.tolist() == [[2, ranking.PAD], [ranking.PAD, ranking.PAD]]


def test_fit_meets_the_optimality_conditions_of_the_constrained_problem():
    # Minimising ||X - XB||^2 + lam ||B||^2 subject to diag(B) = 0: the gradient
    # (G + lam I) B - G vanishes off the diagonal (the diagonal carries the multipliers).
    rng = np.random.default_rng(0)
    x = (rng.random((60, 25)) < 0.3).astype(np.float64)
    g = (x.T @ x).astype(np.float32)
    b = fit(g, 7.0).astype(np.float64)
    grad = (g + 7.0 * np.eye(25)) @ b - g
    off = grad[~np.eye(25, dtype=bool)]
    assert np.abs(off).max() < 1e-3 * np.abs(g).max()
    assert np.all(np.diag(b) == 0)


def test_most_rated_movies_are_kept_and_the_others_never_listed():
    # Counts: movie 0: 3, 1: 2, 2: 2, 3: 1, 4: 0. Two kept: 0 and 1 (the tie 1/2 goes to 1).
    indptr, indices = _csr([[0, 1, 3], [0, 2], [0, 1, 2]])
    catalogue = Catalogue.build(indptr, indices, 5, 2)
    assert catalogue.kept.tolist() == [0, 1]
    assert catalogue.indices.tolist() == [0, 1, 0, 0, 1]  # user 1 keeps movie 0 only
    lists = top_k(fit(gram(catalogue), 1.0), catalogue, np.array([0, 1, 2]), 3)
    assert set(lists.ravel()) <= {0, 1, ranking.PAD}
    assert lists[1].tolist() == [1, ranking.PAD, ranking.PAD]


def test_the_upper_triangle_is_mirrored_block_by_block():
    upper = np.triu(np.arange(64, dtype=np.float32).reshape(8, 8))
    p = upper + np.tril(np.full((8, 8), -1.0, np.float32), -1)  # garbage below the diagonal
    _mirror_upper(p, block=3)  # blocks of 3, 3 and 2 columns
    np.testing.assert_array_equal(p, upper + np.triu(upper, 1).T)


def test_a_matrix_lapack_cannot_factor_is_a_clear_error():
    with pytest.raises(ValueError, match=r"EASE: X\^T X \+ 1 I is not positive definite in "
                                         r"float32 \(LAPACK info 1\); expected a larger "
                                         r"evaluate.ease_lambda"):
        fit(np.diag(np.float32([-5.0, 1.0])), 1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_fit_refuses_a_lambda_that_is_not_positive(bad):
    with pytest.raises(ValueError, match=r"EASE: received lambda=.* \(expected a number > 0\)"):
        fit(np.eye(2, dtype=np.float32), bad)


@pytest.fixture(scope="module")
def small(twin_30k):
    data = prepare(twin_30k.ratings, twin_30k.movies, 0.25, 1234, split="stratified_item")
    n_users, n_movies = len(data.users), len(data.movies)
    train = sparse.csr_by_user(data.train["user_idx"].to_numpy(),
                               data.train["movie_idx"].to_numpy(), n_users)
    test = sparse.csr_by_user(data.test["user_idx"].to_numpy(),
                              data.test["movie_idx"].to_numpy(), n_users)
    users, _ = evaluation_users(train[0], test[0], data.test["user_idx"].to_numpy(), 0, 42)
    return train, test, users, n_users, n_movies


def _dense_reference(train, n_users: int, n_movies: int, users: np.ndarray, lam: float,
                     k: int) -> np.ndarray:
    """EASE written out densely in float64: inverse, B, X B, own movies and never-rated
    movies excluded, top k by score with ties to the smaller index."""
    x = np.zeros((n_users, n_movies))
    indptr, indices = train
    for u in range(n_users):
        x[u, indices[indptr[u]:indptr[u + 1]]] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(n_movies))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    scores = x[users] @ b
    scores[x[users] > 0] = -np.inf
    scores[:, x.sum(axis=0) == 0] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(n_movies), scores.shape), -scores), axis=1)
    return order[:, :k]


def _reference_ndcg(lists: np.ndarray, relevant: list[set[int]], k: int) -> float:
    total = 0.0
    for row, rel in zip(lists, relevant, strict=True):
        dcg = sum(1 / math.log2(p + 2) for p, m in enumerate(row[:k]) if m in rel)
        ideal = sum(1 / math.log2(p + 2) for p in range(min(len(rel), k)))
        total += dcg / ideal
    return total / len(lists)


def test_metrics_equal_a_dense_float64_computation(small):
    train, test, users, n_users, n_movies = small
    lists, report = ease_lists(*train, n_movies, users, 10, (300.0,), 10**6, 0.1, 0, 0)
    assert report["lambda"] == 300.0 and report["movies"] == report["movies_in_train"]
    expected = _dense_reference(train, n_users, n_movies, users, 300.0, 10)
    # float32 against float64: the same lists, but for a near-tie at the edge of a list.
    same = (np.sort(lists, axis=1) == np.sort(expected, axis=1)).all(axis=1).mean()
    assert same > 0.99, same
    relevant = [set(test[1][test[0][u]:test[0][u + 1]].tolist()) for u in users]
    got = ranking.ranking_metrics(lists, *sparse.csr_take(*test, users), 10)["ndcg"]
    assert got == pytest.approx(_reference_ndcg(expected, relevant, 10), abs=2e-3)


def test_lambda_is_chosen_on_the_train_split_by_holdout_ndcg(small):
    train, _, _, _, n_movies = small
    choice = choose_lambda(*train, n_movies, (10.0, 300.0, 30000.0), 10, 10**6, 0.1, 5, 0)
    assert list(choice.holdout_ndcg) == [10.0, 300.0, 30000.0]
    assert choice.lam == max(choice.holdout_ndcg, key=choice.holdout_ndcg.get)
    assert 0 < choice.holdout_users <= len(np.flatnonzero(np.diff(train[0])))
    again = choose_lambda(*train, n_movies, (10.0, 300.0, 30000.0), 10, 10**6, 0.1, 5, 0)
    assert again == choice  # seeded
    sampled = choose_lambda(*train, n_movies, (10.0, 300.0), 10, 10**6, 0.1, 5, 50)
    assert sampled.holdout_users == 50
    one = choose_lambda(*train, n_movies, (300.0,), 10, 10**6, 0.1, 5, 0)
    assert (one.lam, one.holdout_ndcg, one.holdout_users) == (300.0, {}, 0)
