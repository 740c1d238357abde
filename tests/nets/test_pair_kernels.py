"""The fused side-branch kernels (``pair_kernels``) against a direct numpy computation of
the same sums, in float64, on both of their paths: the product of exponentials and, for
projections too large for it, one exp per entry."""

import numpy as np
import pytest

from movierec.nets.pair_kernels import sampled_softmax_rows, side_grads, side_scores
from movierec.nets.scoring import EXP_SAFE


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _reference(u, v, w2, g):
    z = u[:, None, :].astype(np.float64) + v[None, :, :]
    a = _elu(z)
    slope = np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    dz = g[:, :, None] * slope * w2
    return a @ w2, dz.sum(1), dz.sum(0), np.einsum("bp,bph->h", g, a)


@pytest.mark.parametrize("spread", [1.0, 2 * EXP_SAFE])
def test_kernels_equal_the_sums_they_stand_for(spread):
    rng = np.random.default_rng(7)
    b, p, h = 9, 23, 5
    u = rng.uniform(-spread, spread, (b, h)).astype(np.float32)
    v = rng.normal(0, 1, (p, h)).astype(np.float32)
    if spread > EXP_SAFE:  # an entry whose exp(U) alone overflows, and its pairs stay finite
        assert np.abs(u).max() >= EXP_SAFE
    w2 = rng.normal(0, 1, h).astype(np.float32)
    g = rng.normal(0, 1, (b, p)).astype(np.float32)
    g[2, 5] = 0.0  # a pair left out of the loss (an accidental hit)
    scores, d_u, d_v, d_w2 = _reference(u, v, w2, g)
    got = side_scores(u, v, w2)
    assert got.dtype == np.float32 and got.shape == (b, p)
    np.testing.assert_allclose(got, scores, rtol=1e-5, atol=1e-5 * spread)
    for got, expected in zip(side_grads(u, v, w2, g), (d_u, d_v, d_w2), strict=True):
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * spread)


def _softmax_reference(dot, row_bias, col_bias, own, u, v, w2, pos_col, neg_col, hits, scale):
    """The sampled softmax's terms and gradients, directly, in float64."""
    z = u[:, None, :].astype(np.float64) + v[None, :, :]
    logits = dot + row_bias[:, None] + col_bias[None, :] + _elu(z) @ w2
    logits = np.where(hits | (neg_col[None, :] == pos_col[:, None]), -np.inf, logits)
    full = np.concatenate([own[:, None], logits], 1)
    top = full.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(full - top).sum(1))
    p = np.exp(full - lse[:, None]) / scale
    g, g_own = p[:, 1:], p[:, 0] - 1 / scale
    slope = np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    dz = g[:, :, None] * slope * w2
    return (lse - own, g, g_own, dz.sum(1), dz.sum(0), np.einsum("bp,bph->h", g, _elu(z)))


@pytest.mark.parametrize("side", [True, False])
def test_fused_sampled_softmax_rows_equal_the_direct_computation(side):
    rng = np.random.default_rng(3)
    b, n, h = 11, 19, 6 if side else 0
    f32 = np.float32
    dot = rng.normal(0, 2, (b, n)).astype(f32)
    row_bias, col_bias = rng.normal(0, 1, b).astype(f32), rng.normal(0, 1, n).astype(f32)
    own = rng.normal(0, 2, b).astype(f32)
    u, v = rng.normal(0, 1, (b, h)).astype(f32), rng.normal(0, 1, (n, h)).astype(f32)
    w2 = rng.normal(0, 1, h).astype(f32)
    neg_col = rng.permutation(40)[:n].astype(np.int32)
    pos_col = rng.integers(0, 40, b).astype(np.int32)
    pos_col[0] = neg_col[4]  # a row's own movie among the shared columns: left out
    hits = rng.random((b, n)) < 0.2
    args = (dot, row_bias, col_bias, own, u, v, w2, pos_col, neg_col, hits, 7.0)
    expected = _softmax_reference(*args)
    one = sampled_softmax_rows(*args)
    for got, want in zip(one, expected, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert one[1][hits].max() == 0 and one[1][0, 4] == 0  # left out: no gradient at all
    two = sampled_softmax_rows(*args, threads=2)  # the same sums, whatever the threads
    for a, c in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, c)
    terms = sampled_softmax_rows(*args, grads=False)[0]
    np.testing.assert_array_equal(terms, one[0])
