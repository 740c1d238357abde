"""The side branch's term for every (user, movie) pair of a training step, forward and
backward, as fused CPU kernels (numba): what :class:`movierec.nets.pooled.PooledNet` runs with
``kernel="numba"``.

Given the projections ``U`` (B, H) of a batch's users and ``V`` (P, H) of a pool's movies
(``U[b] + V[p]`` is the side branch's pre-activation for the pair), the forward pass is

    S[b, p] = sum_h w2[h] elu(U[b, h] + V[p, h])

and the backward pass, from ``G = dL/dS`` (B, P),

    dU[b, h] = w2[h] sum_p G[b, p] elu'(z),   dV[p, h] = w2[h] sum_b G[b, p] elu'(z),
    dw2[h]   = sum_{b, p} G[b, p] elu(z),     z = U[b, h] + V[p, h].

Built from TensorFlow ops, these materialise several (B, P, H) tensors a step and spend an exp
per entry; here no such tensor is written, and there is no exp in the inner loop: as in
:mod:`movierec.nets.scoring`, ``elu(z) = max(z, 0) + min(exp(z), 1) - 1`` and
``elu'(z) = min(exp(z), 1)`` for every z, and ``exp(U + V) = exp(U) exp(V)`` with each factor
computed once per user and per movie. The ``- 1`` sums to ``-sum(w2)`` in S and to
``-sum(G)`` in dw2. Where a factor could overflow (|U| or |V| >= ``EXP_SAFE``) the loops take
one exp per entry instead (slower, same result).

Each entry is summed in a fixed order, so the results do not depend on anything but the
inputs. tests/nets/test_pooled.py checks both kernels against a GradientTape through the Keras
model, through ``PooledNet``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from movierec.nets.scoring import EXP_SAFE


def prepared(big_u: np.ndarray, big_v: np.ndarray):
    """(U, exp(U), V transposed, exp(V) transposed, exact_exp): the kernels' inputs, movies
    contiguous per hidden unit so the inner loops run over the pool."""
    u = np.ascontiguousarray(big_u, dtype=np.float32)
    v_t = np.ascontiguousarray(np.asarray(big_v, dtype=np.float32).T)
    exact_exp = not (np.abs(u).max(initial=0.0) < EXP_SAFE
                     and np.abs(v_t).max(initial=0.0) < EXP_SAFE)
    with np.errstate(over="ignore", under="ignore"):
        return u, np.exp(u), v_t, np.exp(v_t), exact_exp


def side_scores(big_u: np.ndarray, big_v: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """S (B, P): the side branch's term, before its bias, for every (user, pool movie)."""
    u, eu, v_t, ev_t, exact_exp = prepared(big_u, big_v)
    w2 = np.ascontiguousarray(w2, dtype=np.float32)
    out = np.empty((u.shape[0], v_t.shape[1]), np.float32)
    _forward(u, eu, v_t, ev_t, w2, exact_exp, out)
    out -= w2.sum(dtype=np.float32)
    return out


def side_grads(big_u: np.ndarray, big_v: np.ndarray, w2: np.ndarray, g: np.ndarray):
    """(dU (B, H), dV (P, H), dw2 (H,)) from G = dL/dS (B, P)."""
    u, eu, v_t, ev_t, exact_exp = prepared(big_u, big_v)
    w2 = np.ascontiguousarray(w2, dtype=np.float32)
    g = np.ascontiguousarray(g, dtype=np.float32)
    d_u = np.empty_like(u)
    d_v_t = np.zeros_like(v_t)
    d_w2 = np.zeros_like(w2)
    _backward(u, eu, v_t, ev_t, w2, g, exact_exp, d_u, d_v_t, d_w2)
    d_w2 -= g.sum(dtype=np.float32)
    return d_u, np.ascontiguousarray(d_v_t.T), d_w2


@njit(fastmath=True, inline="always")
def slope(z, e_product, exact_exp):
    """min(exp(z), 1), from the product of exponentials unless ``exact_exp``."""
    if exact_exp:
        return min(np.float32(math.exp(z)), np.float32(1.0))
    return min(e_product, np.float32(1.0))


@njit(fastmath=True, nogil=True, cache=True)
def _forward(u, eu, v_t, ev_t, w2, exact_exp, out):
    """out[b, p] = sum_h w2[h] (max(z, 0) + min(exp(z), 1)), z = U[b, h] + V[p, h]."""
    zero = np.float32(0.0)
    for b in range(u.shape[0]):
        row = out[b]
        row[:] = 0
        for h in range(u.shape[1]):
            ub, eub, w = u[b, h], eu[b, h], w2[h]
            v, ev = v_t[h], ev_t[h]
            for p in range(row.shape[0]):
                z = ub + v[p]
                row[p] += w * (max(z, zero) + slope(z, eub * ev[p], exact_exp))


@njit(fastmath=True, nogil=True, cache=True)
def _backward(u, eu, v_t, ev_t, w2, g, exact_exp, d_u, d_v_t, d_w2):
    """d_u, d_v_t (transposed) and d_w2 (less sum(g), which the caller subtracts) from g."""
    zero = np.float32(0.0)
    for b in range(u.shape[0]):
        g_row = g[b]
        for h in range(u.shape[1]):
            ub, eub, w = u[b, h], eu[b, h], w2[h]
            v, ev, dv = v_t[h], ev_t[h], d_v_t[h]
            to_u, to_w = zero, zero
            for p in range(g_row.shape[0]):
                z = ub + v[p]
                s = slope(z, eub * ev[p], exact_exp)
                to_w += g_row[p] * (max(z, zero) + s)
                dz = g_row[p] * s
                to_u += dz
                dv[p] += w * dz
            d_u[b, h] = w * to_u
            d_w2[h] += to_w
