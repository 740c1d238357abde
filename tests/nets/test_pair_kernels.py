"""The fused side-branch kernels (``pair_kernels``) against a direct numpy computation of
the same sums, in float64, on both of their paths: the product of exponentials and, for
projections too large for it, one exp per entry."""

import numpy as np
import pytest

from movierec.nets.pair_kernels import side_grads, side_scores
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
