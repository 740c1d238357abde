"""The softmax objective's rows, fused: each row's logits over the shared columns, the left-out
pairs, the softmax, its loss and every gradient of the side branch, in one CPU kernel (numba)
and one call from TensorFlow a step.

A row is a user of the batch; its label is either one of the columns (the batch pool: the
user's positive is a pool column) or a logit of its own (the sampled pool: the positive scored
on its own, the columns being the shared negatives). Column p's logit for row b is

    u[b] . m[p] + row_bias[b] + col_bias[p] + sum_h w2[h] elu(U[b, h] + V[p, h])

(the dot-product branch's embeddings u and m, its products by BLAS within each part of the
rows; the side branch's projections U and V). The side
branch's term needs no exp per (pair, unit): as in :mod:`movierec.nets.scoring`,
``elu(z) = max(z, 0) + min(exp(z), 1) - 1`` and ``elu'(z) = min(exp(z), 1)`` for every z, and
``exp(U + V) = exp(U) exp(V)`` with each factor computed once per user and per movie; the
``- 1`` sums to ``-sum(w2)`` in the logits and to ``-sum(G)`` in dw2. Where a factor could
overflow (|U| or |V| >= ``EXP_SAFE``) the loops take one exp per entry instead (slower, same
result).

A pair is left out (an accidental hit) where the user rated the column's movie, found by
reading the user's ratings (CSR by user) against a table from movie to column, or given as a
(B, P) mask; and, with an own label, where the column is the row's own movie. The label itself
never is.

Each step of the objective makes one call into Python here, rather than one per kernel: each
call through ``tf.numpy_function`` costs a fraction of a millisecond, as much as the work of a
small batch. tests/nets/test_softmax_kernel.py checks the results against a direct computation,
and tests/nets/test_pooled.py every gradient against a GradientTape through the Keras model.
"""

from __future__ import annotations

import math
import threading
import types as types_module
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from threadpoolctl import ThreadpoolController

from movierec.nets.scoring import EXP_SAFE

# exp's Cody-Waite range reduction: x = k ln2 + r with |r| <= ln2 / 2, ln2 split in two parts
# so that k * LN2_HI is exact in float32.
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
EXP_FLOOR = np.float32(-87.0)  # exp below this is under float32's smallest normal: 0
LEFT_OUT = np.float32(-1e30)  # a left-out logit, as the TensorFlow path writes it
ROW_CHUNKS = 4  # rows are cut into this many parts, whatever the threads (fixed sum order)


@dataclass(frozen=True)
class RatedPairs:
    """Who rated what, CSR by user: user u's movies are ``movies[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray  # int64, (n_users + 1,)
    movies: np.ndarray  # int32
    n_movies: int

    def column_table(self, columns: np.ndarray) -> np.ndarray:
        """(n_movies,) int32: each movie's column among ``columns`` (movie ids), or
        ``len(columns)`` for a movie not among them: a column past the last, which the
        kernels write to unconditionally rather than test each rating."""
        table = np.full(self.n_movies, len(columns), np.int32)
        table[columns] = np.arange(len(columns), dtype=np.int32)
        return table

    def grid(self, users: np.ndarray, columns: np.ndarray, threads: int = 1) -> np.ndarray:
        """(B, P) bool: True where user ``users[b]`` rated movie ``columns[p]``. Each user's
        ratings are read once, in order: the work is the users' ratings, not every pair
        times a search."""
        table = self.column_table(columns)
        out = np.zeros((len(users), len(columns) + 1), np.bool_)  # and the sink column
        in_row_chunks(threads, _RATED_CHUNKS, self.indptr, self.movies,
                      np.asarray(users, np.int64), table, out)
        return np.ascontiguousarray(out[:, :-1])


def prepared(big_u: np.ndarray, big_v: np.ndarray):
    """(U, exp(U), V transposed, exp(V) transposed, exact_exp): the kernel's inputs, the
    columns contiguous per hidden unit so the inner loops run over them."""
    u = np.ascontiguousarray(big_u, dtype=np.float32)
    v_t = np.ascontiguousarray(np.asarray(big_v, dtype=np.float32).T)
    exact_exp = not (np.abs(u).max(initial=0.0) < EXP_SAFE
                     and np.abs(v_t).max(initial=0.0) < EXP_SAFE)
    with np.errstate(over="ignore", under="ignore"):
        return u, np.exp(u), v_t, np.exp(v_t), exact_exp


def softmax_rows(emb_u, emb_c, row_bias, col_bias, own, label, big_u, big_v, w2, pos_col,
                 neg_col, scale, users, rated: RatedPairs | None, col_movies, hits=None,
                 grads=True, threads=1):
    """The softmax of every row, forward and (with ``grads``) backward, for L = sum(terms) /
    scale.

    ``emb_u`` (B, K) and ``emb_c`` (P, K): the rows' and the columns' embeddings of the
    dot-product branch, K = 0 without one; ``big_u`` (B, H), ``big_v`` (P, H), ``w2`` (H,)
    with H = 0 without a side branch. ``label[b]``: the label's column, or -1 for the own logit
    ``own[b]``. Left out: where user ``users[b]`` rated ``col_movies[p]`` (``rated``; or where
    ``hits`` (B, P) is True when given instead), and where ``neg_col[p] == pos_col[b]``; never
    the label's column.

    Returns (terms (B,), G = dL/d column logits (B, P), dL/d own logits (B,), dU (B, H),
    dV (P, H), dw2 (H,), d emb_u (B, K), d emb_c (P, K), G's row sums (B,), G's column sums
    (P,)); without ``grads``, terms and empty arrays. Rows run in ``ROW_CHUNKS`` parts on
    ``threads`` threads (:func:`in_row_chunks`); the results do not depend on ``threads``, but
    for values under float32's smallest normal, which some threads flush to zero (TensorFlow's
    do, numba's do not).
    """
    f32 = np.float32
    n_rows, n_cols = len(row_bias), len(col_bias)
    u, eu, v_t, ev_t, exact_exp = prepared(big_u, big_v)
    w2 = np.ascontiguousarray(w2, dtype=f32)
    emb_u = np.ascontiguousarray(emb_u, dtype=f32)
    emb_c = np.ascontiguousarray(emb_c, dtype=f32)
    if hits is None:
        table = rated.column_table(col_movies)
        indptr, rated_movies = rated.indptr, rated.movies
        hits = np.zeros((0, 0), np.bool_)
    else:
        table, indptr = np.zeros(0, np.int32), np.zeros(1, np.int64)
        rated_movies, hits = np.zeros(0, np.int32), np.asarray(hits, np.bool_)
    args = (emb_u, np.ascontiguousarray(emb_c.T), emb_c, np.asarray(row_bias, f32),
            np.asarray(col_bias, f32) - w2.sum(dtype=f32), np.asarray(own, f32),
            np.asarray(label, np.int32), u, eu, v_t, ev_t, w2, exact_exp,
            np.asarray(pos_col, np.int32), np.asarray(neg_col, np.int32),
            np.asarray(users, np.int64), indptr, rated_movies, table, hits,
            f32(1.0 / scale), grads)
    k = emb_u.shape[1]
    terms = np.empty(n_rows, f32)
    shape = (n_rows, n_cols) if grads else (0, 0)
    g, g_own = np.empty(shape, f32), np.empty(shape[0], f32)
    d_u = np.empty((shape[0], u.shape[1]), f32)
    d_emb_u = np.zeros((shape[0], k), f32)
    row_sums = np.empty(shape[0], f32)
    d_v_parts = np.zeros((ROW_CHUNKS, *(v_t.shape if grads else (0, 0))), f32)
    d_emb_parts = np.zeros((ROW_CHUNKS, shape[1], k), f32)
    col_parts = np.zeros((ROW_CHUNKS, shape[1]), f32)
    d_w_parts = np.zeros((ROW_CHUNKS, len(w2)), f32)
    with one_blas_thread:
        in_row_chunks(threads, _SOFTMAX_CHUNKS, *args, terms, g, g_own, d_u, d_emb_u,
                      row_sums, d_v_parts, d_emb_parts, col_parts, d_w_parts)
    if not grads:
        empty = np.zeros((0, 0), f32)
        return terms, g, g_own, d_u, empty, np.zeros(0, f32), d_emb_u, empty, row_sums, \
            np.zeros(0, f32)
    d_v_t, d_w2, d_emb_c, col_sums = d_v_parts[0], d_w_parts[0], d_emb_parts[0], col_parts[0]
    for i in range(1, ROW_CHUNKS):  # in chunk order: the same sums on any thread count
        d_v_t += d_v_parts[i]
        d_w2 += d_w_parts[i]
        d_emb_c += d_emb_parts[i]
        col_sums += col_parts[i]
    d_w2 -= row_sums.sum(dtype=f32)  # the side terms' "- 1"s, summed over the columns' pairs
    return (terms, g, g_own, d_u, np.ascontiguousarray(d_v_t.T), d_w2, d_emb_u, d_emb_c,
            row_sums, col_sums)


class _OneBlasThread:
    """A context in which numpy's and scipy's BLAS run on the calling thread alone, for any
    number of nested or concurrent callers (replicas): the kernel's products (numba's
    ``np.dot`` calls scipy's BLAS) run inside its parallel parts, and BLAS's own threads would
    spin on the cores those parts run on, which makes a call several times slower."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth, self._blas, self._limiter = 0, None, None

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                if self._blas is None:  # loaded first, so that it is found and limited too
                    import scipy.linalg.cython_blas  # noqa: F401
                    self._blas = ThreadpoolController().select(user_api="blas")
                self._limiter = self._blas.limit(limits=1)
            self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._limiter.restore_original_limits()


one_blas_thread = _OneBlasThread()


# numba's workqueue threading layer (its fallback where neither OpenMP nor TBB is installed)
# aborts the process on parallel launches from two threads at once, as replicas make.
_PARALLEL_LAUNCH = threading.Lock()
_LAUNCHER = threading.local()  # the thread count last set on each calling thread


def in_row_chunks(threads: int, kernel, *arrays) -> None:
    """Runs ``kernel`` (a pair from :func:`_chunked`) over the ``ROW_CHUNKS`` parts of the
    rows: in order on the calling thread, or on ``threads`` of numba's threads. The parts
    are the same whatever the threads, so sums a caller makes over them in order are too."""
    serial, parallel = kernel
    if threads <= 1:
        serial(*arrays)
        return
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    with _PARALLEL_LAUNCH:
        # numba's count is per calling thread, and setting it costs more than a small
        # kernel's launch: set once per thread and count.
        if getattr(_LAUNCHER, "threads", None) != threads:
            numba.set_num_threads(threads)
            _LAUNCHER.threads = threads
        parallel(*arrays)


def serial_and_parallel(body, **options):
    """(serial, parallel) compilations of ``body``, whose loop over its parts is a prange (a
    plain range when compiled without parallel), both cached on disk. numba's cache keys a
    function by its qualified name and signature, not by ``parallel``: the parallel one is
    compiled from a copy of ``body`` under another name, so that each has its own entry."""
    twin = types_module.FunctionType(body.__code__, body.__globals__, body.__name__ + "_parallel",
                                     body.__defaults__, body.__closure__)
    twin.__qualname__ = body.__qualname__ + "_parallel"
    twin.__module__ = body.__module__
    return (njit(nogil=True, cache=True, **options)(body),
            njit(nogil=True, cache=True, parallel=True, **options)(twin))


def _chunked(body):
    """:func:`serial_and_parallel` for a fused kernel's driver (fastmath)."""
    return serial_and_parallel(body, fastmath=True)


@njit(inline="always")
def _chunk(n_rows, i):
    """Rows [r0, r1) of chunk i of ``ROW_CHUNKS``."""
    return n_rows * i // ROW_CHUNKS, n_rows * (i + 1) // ROW_CHUNKS


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (free: an LLVM bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(fastmath=True, inline="always")
def slope(z, e_product, exact_exp):
    """elu'(z) = min(exp(z), 1), from the product of exponentials unless ``exact_exp``."""
    if exact_exp:
        return min(np.float32(math.exp(z)), np.float32(1.0))
    return min(e_product, np.float32(1.0))


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


@njit(nogil=True, inline="always")
def _strike_rated(user, indptr, movies, table, row, value):
    """row[table[m]] = value for every movie m the user rated, the sink column included.
    Unsigned indices: numba then emits no check for negative ones, and the loop runs at the
    speed of reading the ratings."""
    rated = movies[indptr[user]:indptr[user + 1]]
    for i in range(rated.shape[0]):
        row[np.uint32(table[np.uint32(rated[i])])] = value


@njit(nogil=True)
def _rated_rows(r0, r1, indptr, movies, users, table, out):
    for b in range(r0, r1):
        _strike_rated(users[b], indptr, movies, table, out[b], True)


@njit(fastmath=True, inline="always")
def _row_logits(b, dot, row_bias, col_bias, u, eu, v_t, ev_t, w2, exact_exp, logits):
    """Row b's column logits, before anything is left out; ``dot``: the dot-product
    branch's logits of this row, or an empty array."""
    zero = np.float32(0.0)
    for p in range(logits.shape[0]):
        logits[p] = row_bias[b] + col_bias[p]
    if dot.shape[0] > 0:
        for p in range(logits.shape[0]):
            logits[p] += dot[p]
    for h in range(u.shape[1]):
        ub, eub, w = u[b, h], eu[b, h], w2[h]
        v, ev = v_t[h], ev_t[h]
        for p in range(logits.shape[0]):
            z = ub + v[p]
            logits[p] += w * (max(z, zero) + slope(z, eub * ev[p], exact_exp))


@njit(fastmath=True, inline="always")
def _row_keep(b, label, pos_col, neg_col, users, indptr, movies, table, hits, keep):
    """keep[p] = 1 for the pairs of row b that count, 0 for those left out; keep has one
    column more than the row, the sink of :meth:`RatedPairs.column_table`."""
    n_cols = keep.shape[0] - 1
    for p in range(n_cols):
        keep[p] = np.float32(0.0) if neg_col[p] == pos_col[b] else np.float32(1.0)
    if hits.shape[0] > 0:
        for p in range(n_cols):
            if hits[b, p]:
                keep[p] = np.float32(0.0)
    else:  # keep has the sink column
        _strike_rated(users[b], indptr, movies, table, keep, np.float32(0.0))
    if label[b] >= 0:
        keep[label[b]] = np.float32(1.0)


@njit(fastmath=True, nogil=True)
def _softmax_rows(r0, r1, dot, row_bias, col_bias, own, label, u, eu, v_t, ev_t, w2,
                  exact_exp, pos_col, neg_col, users, indptr, movies, table, hits, inv_scale,
                  grads, terms, g, g_own, d_u, row_sums, d_v_t, col_sums, d_w2):
    """Rows r0..r1 of :func:`softmax_rows`, ``dot`` their dot-product logits (r1 - r0, P)
    or empty; d_v_t, col_sums and d_w2 are this chunk's own."""
    zero = np.float32(0.0)
    n_cols, n_h = col_bias.shape[0], u.shape[1]
    logits = np.empty(n_cols, np.float32)
    keep = np.empty(n_cols + 1, np.float32)
    for b in range(r0, r1):
        _row_logits(b, dot[b - r0] if dot.shape[0] > 0 else dot[0:0, 0], row_bias, col_bias,
                    u, eu, v_t, ev_t, w2, exact_exp, logits)
        _row_keep(b, label, pos_col, neg_col, users, indptr, movies, table, hits, keep)
        own_label = label[b] < 0
        target = own[b] if own_label else logits[label[b]]
        top = own[b] if own_label else LEFT_OUT
        for p in range(n_cols):
            logits[p] = logits[p] if keep[p] > 0 else LEFT_OUT
            top = max(top, logits[p])
        total = _exp_nonpositive(own[b] - top) if own_label else zero
        for p in range(n_cols):
            logits[p] = keep[p] * _exp_nonpositive(logits[p] - top)  # now exp(logit - top)
            total += logits[p]
        terms[b] = top + np.float32(np.log(total)) - target
        if not grads:
            continue
        norm = inv_scale / total
        g_row = g[b]
        for p in range(n_cols):
            g_row[p] = logits[p] * norm
        if own_label:
            g_own[b] = _exp_nonpositive(own[b] - top) * norm - inv_scale
        else:
            g_own[b] = zero
            g_row[label[b]] -= inv_scale
        row_sum = zero
        for p in range(n_cols):
            row_sum += g_row[p]
            col_sums[p] += g_row[p]
        row_sums[b] = row_sum
        for h in range(n_h):
            ub, eub, w = u[b, h], eu[b, h], w2[h]
            v, ev, dv = v_t[h], ev_t[h], d_v_t[h]
            to_u, to_w = zero, zero
            for p in range(n_cols):
                z = ub + v[p]
                s = slope(z, eub * ev[p], exact_exp)
                to_w += g_row[p] * (max(z, zero) + s)
                dz = g_row[p] * s
                to_u += dz
                dv[p] += w * dz
            d_u[b, h] = w * to_u
            d_w2[h] += to_w


def _softmax_chunks(emb_u, emb_t, emb_c, row_bias, col_bias, own, label, u, eu, v_t, ev_t, w2,
                    exact_exp, pos_col, neg_col, users, indptr, movies, table, hits, inv_scale,
                    grads, terms, g, g_own, d_u, d_emb_u, row_sums, d_v_parts, d_emb_parts,
                    col_parts, d_w_parts):
    main = emb_u.shape[1] > 0
    for i in prange(ROW_CHUNKS):
        r0, r1 = _chunk(row_bias.shape[0], i)
        # The dot-product branch's products of this part's rows, by BLAS (one thread each).
        dot = np.dot(emb_u[r0:r1], emb_t) if main and r1 > r0 else np.zeros((0, 0), np.float32)
        _softmax_rows(r0, r1, dot, row_bias, col_bias, own, label, u, eu, v_t, ev_t, w2,
                      exact_exp, pos_col, neg_col, users, indptr, movies, table, hits,
                      inv_scale, grads, terms, g, g_own, d_u, row_sums, d_v_parts[i],
                      col_parts[i], d_w_parts[i])
        if grads and main and r1 > r0:
            d_emb_u[r0:r1] = np.dot(g[r0:r1], emb_c)
            d_emb_parts[i] = np.dot(g[r0:r1].T, emb_u[r0:r1])


def _rated_chunks(indptr, movies, users, table, out):
    for i in prange(ROW_CHUNKS):
        r0, r1 = _chunk(users.shape[0], i)
        _rated_rows(r0, r1, indptr, movies, users, table, out)


_SOFTMAX_CHUNKS = _chunked(_softmax_chunks)
_RATED_CHUNKS = _chunked(_rated_chunks)
