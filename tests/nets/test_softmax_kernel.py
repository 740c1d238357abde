"""The fused softmax rows (``softmax_kernel``) against a direct computation in float64: with
the label a column (the batch pool) or a logit of its own (the sampled pool), the rated pairs
read from the CSR or given as a mask, with and without each branch, with projections too large
for the product of exponentials, on one thread or two."""

import numpy as np
import pytest

from movierec.nets.scoring import EXP_SAFE
from movierec.nets.softmax_kernel import _RATED_CHUNKS, _SOFTMAX_CHUNKS, RatedPairs, softmax_rows
from movierec.train.host_steps import ADAM_ROWS

B, P, H, K, N_USERS, N_MOVIES = 11, 19, 6, 5, 30, 40


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _reference(emb_u, emb_c, row_bias, col_bias, own, label, u, v, w2, pos_col, neg_col, scale,
               hits):
    z = u[:, None, :].astype(np.float64) + v[None, :, :]
    emb_u, emb_c = emb_u.astype(np.float64), emb_c.astype(np.float64)
    logits = emb_u @ emb_c.T + row_bias[:, None] + col_bias[None, :] + _elu(z) @ w2
    columns = np.arange(P)[None, :]
    left_out = (hits | (neg_col[None, :] == pos_col[:, None])) & (columns != label[:, None])
    logits = np.where(left_out, -np.inf, logits)
    own_label = label < 0
    full = np.concatenate([np.where(own_label, own, -np.inf)[:, None], logits], 1)
    top = full.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(full - top).sum(1))
    target = np.where(own_label, own, logits[np.arange(B), np.maximum(label, 0)])
    p = np.exp(full - lse[:, None]) / scale
    g, g_own = p[:, 1:].copy(), np.where(own_label, p[:, 0] - 1 / scale, 0.0)
    g[~own_label, label[~own_label]] -= 1 / scale
    slope = np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    dz = g[:, :, None] * slope * w2
    return (lse - target, g, g_own, dz.sum(1), dz.sum(0), np.einsum("bp,bph->h", g, _elu(z)),
            g @ emb_c, g.T @ emb_u, g.sum(1), g.sum(0))


def _case(seed, own_label, side, main, spread=1.0):
    rng = np.random.default_rng(seed)
    f32, h = np.float32, H if side else 0
    k = K if main else 0
    emb_u, emb_c = rng.normal(0, 1, (B, k)).astype(f32), rng.normal(0, 1, (P, k)).astype(f32)
    row_bias, col_bias = rng.normal(0, 1, B).astype(f32), rng.normal(0, 1, P).astype(f32)
    own = rng.normal(0, 2, B).astype(f32)
    u, v = rng.normal(0, 1, (B, h)).astype(f32), rng.normal(0, 1, (P, h)).astype(f32)
    u[0] *= spread  # beyond EXP_SAFE, exp(U) alone would overflow: one exp per entry instead
    w2 = rng.normal(0, 1, h).astype(f32)
    col_movies = rng.permutation(N_MOVIES)[:P].astype(np.int32)
    users = rng.integers(0, N_USERS, B).astype(np.int32)
    rated = np.zeros((N_USERS, N_MOVIES), bool)
    rated[rng.integers(0, N_USERS, 150), rng.integers(0, N_MOVIES, 150)] = True
    if own_label:  # the sampled pool: the own logit is the label; a row's own movie shared
        label = np.full(B, -1, np.int32)
        neg_col = rng.permutation(50)[:P].astype(np.int32)
        pos_col = rng.integers(0, 50, B).astype(np.int32)
        pos_col[0] = neg_col[4]
    else:  # the batch pool: a column is the label, even where the user rated it
        label = rng.integers(0, P, B).astype(np.int32)
        rated[users[1], col_movies[label[1]]] = True
        neg_col, pos_col = np.arange(P, dtype=np.int32), label
    indptr = np.concatenate([[0], np.cumsum(rated.sum(1))]).astype(np.int64)
    pairs = RatedPairs(indptr, np.nonzero(rated)[1].astype(np.int32), N_MOVIES)
    hits = rated[users][:, col_movies]
    assert hits.any()
    args = (emb_u, emb_c, row_bias, col_bias, own, label, u, v, w2, pos_col, neg_col, 7.0)
    expected = _reference(*args, hits)
    return args, users, pairs, col_movies, hits, expected


@pytest.mark.parametrize(("side", "main", "spread"),
                         [(True, True, 1.0), (False, True, 1.0), (True, False, 1.0),
                          (True, True, 2 * EXP_SAFE)])
@pytest.mark.parametrize("own_label", [True, False])
def test_softmax_rows_equal_the_direct_computation(own_label, side, main, spread):
    args, users, pairs, col_movies, hits, expected = _case(3, own_label, side, main, spread)
    from_csr = softmax_rows(*args, users, pairs, col_movies)
    for got, want in zip(from_csr, expected, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * spread)
    g, label = from_csr[1], args[5]
    left_out = hits & (np.arange(P)[None, :] != label[:, None])
    assert left_out.any() and g[left_out].max() == 0  # left out: no gradient at all
    from_mask = softmax_rows(*args, users, None, col_movies, hits=hits)
    two_threads = softmax_rows(*args, users, pairs, col_movies, threads=2)
    for a, b, c in zip(from_csr, from_mask, two_threads, strict=True):
        np.testing.assert_array_equal(a, b)
        # The same sums, whatever the threads; only values under float32's smallest normal
        # may differ: TensorFlow's threads flush them to zero, Python's threads do not.
        np.testing.assert_allclose(a, c, rtol=0, atol=np.finfo(np.float32).tiny)
    terms = softmax_rows(*args, users, pairs, col_movies, grads=False)[0]
    np.testing.assert_array_equal(terms, from_csr[0])


def test_rated_grid_is_every_rated_pair_and_no_other():
    _, users, pairs, col_movies, hits, _ = _case(5, True, True, True)
    np.testing.assert_array_equal(pairs.grid(users, col_movies), hits)
    np.testing.assert_array_equal(pairs.grid(users, col_movies, threads=2), hits)


def test_serial_and_parallel_builds_are_cached_apart():
    # numba's cache keys a function by its name, not by ``parallel``: two builds of one
    # function would overwrite each other's entry, and a process would load the wrong one.
    for serial, parallel in (_SOFTMAX_CHUNKS, _RATED_CHUNKS, ADAM_ROWS):
        assert serial.targetoptions.get("parallel") is None
        assert parallel.targetoptions["parallel"] is True
        names = [d._cache._cache_file._index_name for d in (serial, parallel)]
        assert names[0] != names[1], names
