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
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from movierec.nets.scoring import EXP_SAFE


def _prepared(big_u: np.ndarray, big_v: np.ndarray):
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
    u, eu, v_t, ev_t, exact_exp = _prepared(big_u, big_v)
    w2 = np.ascontiguousarray(w2, dtype=np.float32)
    out = np.empty((u.shape[0], v_t.shape[1]), np.float32)
    _forward(u, eu, v_t, ev_t, w2, exact_exp, out)
    out -= w2.sum(dtype=np.float32)
    return out


def side_grads(big_u: np.ndarray, big_v: np.ndarray, w2: np.ndarray, g: np.ndarray):
    """(dU (B, H), dV (P, H), dw2 (H,)) from G = dL/dS (B, P)."""
    u, eu, v_t, ev_t, exact_exp = _prepared(big_u, big_v)
    w2 = np.ascontiguousarray(w2, dtype=np.float32)
    g = np.ascontiguousarray(g, dtype=np.float32)
    d_u = np.empty_like(u)
    d_v_t = np.zeros_like(v_t)
    d_w2 = np.zeros_like(w2)
    _backward(u, eu, v_t, ev_t, w2, g, exact_exp, d_u, d_v_t, d_w2)
    d_w2 -= g.sum(dtype=np.float32)
    return d_u, np.ascontiguousarray(d_v_t.T), d_w2


@njit(fastmath=True, inline="always")
def _slope(z, e_product, exact_exp):
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
                row[p] += w * (max(z, zero) + _slope(z, eub * ev[p], exact_exp))


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
                slope = _slope(z, eub * ev[p], exact_exp)
                to_w += g_row[p] * (max(z, zero) + slope)
                dz = g_row[p] * slope
                to_u += dz
                dv[p] += w * dz
            d_u[b, h] = w * to_u
            d_w2[h] += to_w


# --- the sampled softmax's rows, fused ------------------------------------------------------

# exp's Cody-Waite range reduction: x = k ln2 + r with |r| <= ln2 / 2, ln2 split in two parts
# so that k * LN2_HI is exact in float32.
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
EXP_FLOOR = np.float32(-87.0)  # exp below this is under float32's smallest normal: 0
LEFT_OUT = np.float32(-1e30)  # a left-out logit, as the TensorFlow path writes it
ROW_CHUNKS = 4  # rows are cut into this many parts, whatever the threads (fixed sum order)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (free: an LLVM bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(fastmath=True, inline="always")
def _exp_nonpositive(x):
    """exp(x) for x <= 0, to about an ulp, 0 below ``EXP_FLOOR``. Arithmetic only (2^k is
    built from its bits), so a loop over it vectorises, where a call to expf does not."""
    t = max(x, EXP_FLOOR)
    k = np.floor(t * LOG2E + np.float32(0.5))
    r = (t - k * LN2_HI) - k * LN2_LO
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    e = p * _float32_from_bits(np.int32((np.int32(k) + np.int32(127)) << np.int32(23)))
    return e if x > EXP_FLOOR else np.float32(0.0)


def sampled_softmax_rows(dot, row_bias, col_bias, own, big_u, big_v, w2, pos_col, neg_col,
                         hits, scale, grads=True, threads=1):
    """The sampled softmax of each row's own logit against N shared columns, forward and (with
    ``grads``) backward, in one pass over the (B, N) grid.

    Column n's logit for row b is ``dot[b, n] + row_bias[b] + col_bias[n]`` plus the side
    branch's term for (U[b], V[n]); it is left out where ``hits[b, n]`` or ``neg_col[n] ==
    pos_col[b]``. ``dot`` may be (0, 0) (no dot-product branch), ``big_u``/``big_v``/``w2``
    may have H = 0 (no side branch). Returns (terms (B,), G = dL/d logits (B, N), g_own =
    dL/d own (B,), dU (B, H), dV (N, H), dw2 (H,)) for L = sum(terms) / scale; without
    ``grads`` the five gradients are empty. Rows run in ``ROW_CHUNKS`` parts on ``threads``
    threads (the kernel releases the GIL); the results do not depend on ``threads``.
    """
    n_rows, n_cols = len(row_bias), len(col_bias)
    u, eu, v_t, ev_t, exact_exp = _prepared(big_u, big_v)
    w2 = np.ascontiguousarray(w2, dtype=np.float32)
    f32 = np.float32
    col_bias = np.asarray(col_bias, f32) - w2.sum(dtype=f32)  # the side terms' "- 1"s
    dot = np.ascontiguousarray(dot, dtype=f32)
    args = (dot, dot.size > 0, np.asarray(row_bias, f32), col_bias, np.asarray(own, f32),
            u, eu, v_t, ev_t, w2, exact_exp, np.asarray(pos_col), np.asarray(neg_col),
            np.asarray(hits, np.bool_), f32(1.0 / scale), grads)
    terms = np.empty(n_rows, f32)
    shape = (n_rows, n_cols) if grads else (0, 0)
    g, g_own = np.zeros(shape, f32), np.zeros(shape[0], f32)
    d_u = np.zeros((shape[0], u.shape[1]), f32)
    parts = [(np.zeros(v_t.shape if grads else (0, 0), f32), np.zeros(len(w2), f32))
             for _ in range(ROW_CHUNKS)]
    in_row_chunks(n_rows, threads, lambda i, r0, r1: _softmax_rows(
        r0, r1, *args, terms, g, g_own, d_u, *parts[i]))
    if not grads:
        return terms, g, g_own, d_u, np.zeros((0, 0), f32), np.zeros(0, f32)
    d_v_t, d_w2 = parts[0]
    for more_v, more_w in parts[1:]:  # in chunk order: the same sums on any thread count
        d_v_t += more_v
        d_w2 += more_w
    d_w2 -= g.sum(dtype=f32)
    return terms, g, g_own, d_u, np.ascontiguousarray(d_v_t.T), d_w2


_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def in_row_chunks(n_rows: int, threads: int, work) -> None:
    """Calls ``work(i, r0, r1)`` for the ``ROW_CHUNKS`` parts of rows 0..n_rows, on
    ``threads`` threads (``work`` is a kernel that releases the GIL). The parts are the same
    whatever the threads, so sums a caller makes over them in order are too."""
    bounds = np.linspace(0, n_rows, ROW_CHUNKS + 1).astype(np.int64)
    if threads <= 1:
        for i in range(ROW_CHUNKS):
            work(i, bounds[i], bounds[i + 1])
        return
    if threads not in _EXECUTORS:
        _EXECUTORS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="pair-kernels")
    list(_EXECUTORS[threads].map(lambda i: work(i, bounds[i], bounds[i + 1]),
                                 range(ROW_CHUNKS)))


@njit(fastmath=True, nogil=True, cache=True)
def _softmax_rows(r0, r1, dot, has_dot, row_bias, col_bias, own, u, eu, v_t, ev_t, w2,
                  exact_exp, pos_col, neg_col, hits, inv_scale, grads, terms, g, g_own, d_u,
                  d_v_t, d_w2):
    """Rows r0..r1 of :func:`sampled_softmax_rows`; d_v_t and d_w2 are this chunk's own."""
    zero = np.float32(0.0)
    n_cols, n_h = col_bias.shape[0], u.shape[1]
    logits = np.empty(n_cols, np.float32)
    keep = np.empty(n_cols, np.float32)
    for b in range(r0, r1):
        for p in range(n_cols):
            logits[p] = row_bias[b] + col_bias[p]
        if has_dot:
            for p in range(n_cols):
                logits[p] += dot[b, p]
        for h in range(n_h):
            ub, eub, w = u[b, h], eu[b, h], w2[h]
            v, ev = v_t[h], ev_t[h]
            for p in range(n_cols):
                z = ub + v[p]
                logits[p] += w * (max(z, zero) + _slope(z, eub * ev[p], exact_exp))
        top = own[b]
        for p in range(n_cols):
            left_out = hits[b, p] or neg_col[p] == pos_col[b]
            keep[p] = np.float32(0.0) if left_out else np.float32(1.0)
            logits[p] = LEFT_OUT if left_out else logits[p]
            top = max(top, logits[p])
        total = _exp_nonpositive(own[b] - top)
        for p in range(n_cols):
            logits[p] = keep[p] * _exp_nonpositive(logits[p] - top)  # now exp(logit - top)
            total += logits[p]
        terms[b] = top + np.float32(np.log(total)) - own[b]
        if not grads:
            continue
        norm = inv_scale / total
        g_own[b] = _exp_nonpositive(own[b] - top) * norm - inv_scale
        g_row = g[b]
        for p in range(n_cols):
            g_row[p] = logits[p] * norm
        for h in range(n_h):
            ub, eub, w = u[b, h], eu[b, h], w2[h]
            v, ev, dv = v_t[h], ev_t[h], d_v_t[h]
            to_u, to_w = zero, zero
            for p in range(n_cols):
                z = ub + v[p]
                slope = _slope(z, eub * ev[p], exact_exp)
                to_w += g_row[p] * (max(z, zero) + slope)
                dz = g_row[p] * slope
                to_u += dz
                dv[p] += w * dz
            d_u[b, h] = w * to_u
            d_w2[h] += to_w
