"""Exact scores of the tutorial's network for every (user, movie) pair, fast.

The network predicts ``mean + u.m + b_u + b_m + w2 . elu(W1 [u; m] + b1) + b2``. Scoring it
through the Keras graph pair by pair repeats work: the side branch's first Dense layer is linear
in the concatenated embeddings, so ``W1 [u; m] + b1 = U[u] + V[m]`` with ``U = user_emb @ W1_u``
(per user) and ``V = movie_emb @ W1_m + b1`` (per movie). What is left per (user, movie, hidden
unit) is one add, one elu and one multiply-add: 1.1 x 10^10 of them for one MovieLens-20M user
block of 1,000 users. That loop is the whole cost, so it is a fused kernel (numba): no
temporary of (users x movies x hidden) is ever written.

Two more tricks make the kernel cheap. ``elu(x) = max(x, 0) + min(exp(x), 1) - 1`` for every
x, and ``exp(U + V) = exp(U) exp(V)``, with both factors computed once per user and per movie:
the inner loop has no exp, only adds, multiplies, a max and a min, which vectorise. The ``- 1``
sums to ``-sum(w2)``, a constant folded into the per-movie term. And each movie tile is scored
for four users at a time, so every value of ``V`` read from cache serves four users.

The product of exponentials is exact to float32 rounding as long as neither factor overflows
or underflows (|U|, |V| < 80); otherwise :func:`side_branch` falls back to one exp per pair
(slower, same result). Scores agree with Keras' to about 1e-6 (tests compare them on every
pair of a small model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from movierec.core.errors import MovieRecError
from movierec.nets.spec import NetSpec

# Movies per tile: 256 movies x 400 hidden units x 2 arrays x 4 bytes = 800 KiB, within L2.
TILE = 256
# Beyond this, exp(U) or exp(V) would overflow or underflow float32 (exp(88.7) is its max).
EXP_SAFE = 80.0


class ScoringError(MovieRecError, ValueError):
    """A model that cannot be scored (non-finite weights) or a request it cannot answer."""


@dataclass(frozen=True)
class ScoringWeights:
    """The network's weights rearranged for scoring; built by :func:`from_weights`.

    A branch that the model lacks (``mf`` has no side branch, ``deep`` no main branch) is
    represented by zeros where that keeps the formula, and ``has_side``/``has_main`` flags.
    """

    user_emb: np.ndarray  # (n_users, K)
    movie_emb: np.ndarray  # (n_movies, K)
    movie_emb_t: np.ndarray  # (K, n_movies)
    user_const: np.ndarray  # (n_users,): b_u
    movie_const: np.ndarray  # (n_movies,): b_m + b2 + mean - sum(w2)
    user_hidden_kernel: np.ndarray  # (K, H): W1's user rows
    movie_hidden: np.ndarray  # (n_movies, H): V, a movie's units contiguous (pair scoring)
    movie_hidden_exp: np.ndarray  # (n_movies, H): exp(V)
    movie_hidden_t: np.ndarray  # (H, n_movies): V transposed, movies contiguous per unit
    movie_hidden_exp_t: np.ndarray  # (H, n_movies): exp(V), transposed
    w2: np.ndarray  # (H,)
    has_main: bool
    has_side: bool

    @property
    def n_users(self) -> int:
        return self.user_emb.shape[0]

    @property
    def n_movies(self) -> int:
        return self.movie_emb.shape[0]

    def user_hidden(self, users: np.ndarray) -> np.ndarray:
        """U for a block of users (B, H)."""
        return _rows_times(self.user_emb, np.asarray(users, np.int64), self.user_hidden_kernel)

    def main_scores(self, users: np.ndarray) -> np.ndarray:
        """Everything but the side branch's elu term, for every movie (B, n_movies)."""
        users = np.asarray(users, np.int64)
        out = np.empty((len(users), self.n_movies), np.float32)
        _main_all(self.user_emb, users, self.movie_emb_t, self.user_const, self.movie_const,
                  self.has_main, out)
        return out


# Small products computed by loops in a fixed order rather than by BLAS, whose rounding can
# depend on the number of rows: one user's scores must not depend on the block it is in (the
# recommend command scores one user, the stage 128 at a time).
@njit(cache=True)
def _rows_times(table, rows, kernel):
    """table[rows] @ kernel, each entry summed over k in order."""
    out = np.zeros((len(rows), kernel.shape[1]), np.float32)
    for b in range(len(rows)):
        for k in range(kernel.shape[0]):
            x = table[rows[b], k]
            for h in range(kernel.shape[1]):
                out[b, h] += x * kernel[k, h]
    return out


@njit(parallel=True, cache=True)
def _main_all(user_emb, users, movie_emb_t, user_const, movie_const, has_main, out):
    """out[b, m] = u.m + b_u + (b_m + constants), the dot product summed over k in order."""
    for b in prange(len(users)):
        u = users[b]
        row = out[b]
        row[:] = 0
        if has_main:
            for k in range(user_emb.shape[1]):
                x = user_emb[u, k]
                for m in range(row.shape[0]):
                    row[m] += x * movie_emb_t[k, m]
        for m in range(row.shape[0]):
            row[m] += user_const[u] + movie_const[m]


def from_weights(spec: NetSpec, weights: dict[str, np.ndarray]) -> ScoringWeights:
    """The scorer of the network ``spec`` describes, from its weights named as in
    ``spec.tables`` and ``spec.dense`` (``keras_model.weights_of``). A rating model's
    training mean is in the constants, so its scores are ratings."""
    def get(name: str) -> np.ndarray:
        return np.asarray(weights[name], dtype=np.float32)

    user_emb, movie_emb = get("user_embedding"), get("movie_embedding")
    n_users, k = user_emb.shape
    n_movies = movie_emb.shape[0]
    has_main, has_side = spec.has_main, spec.has_side
    mean = np.float32(spec.train_mean)
    user_const = get("user_bias")[:, 0] if has_main else np.zeros(n_users, np.float32)
    movie_const = (get("movie_bias")[:, 0] if has_main
                   else np.zeros(n_movies, np.float32)) + mean
    if has_side:
        w1, b1 = get("hidden/kernel"), get("hidden/bias")
        w2, b2 = get("side_out/kernel")[:, 0], get("side_out/bias")
        movie_hidden = movie_emb @ w1[k:] + b1  # (n_movies, H)
        movie_const = movie_const + (b2[0] - w2.sum(dtype=np.float32))
        user_kernel = w1[:k]
    else:  # one hidden unit of weight 0 keeps the shapes valid; has_side skips the kernel
        movie_hidden = np.zeros((n_movies, 1), np.float32)
        user_kernel, w2 = np.zeros((k, 1), np.float32), np.zeros(1, np.float32)
    for name, array in (("user_embedding", user_emb), ("movie_embedding", movie_emb),
                        ("biases", movie_const), ("side branch", movie_hidden)):
        if not np.isfinite(array).all():
            raise ScoringError(f"model: the {name} weights hold NaN or infinity (expected a "
                             "trained model with finite weights; did training diverge?)")
    hidden_t = np.ascontiguousarray(movie_hidden.T, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        hidden_exp_t = np.exp(hidden_t)
    return ScoringWeights(
        user_emb=np.ascontiguousarray(user_emb), movie_emb=np.ascontiguousarray(movie_emb),
        movie_emb_t=np.ascontiguousarray(movie_emb.T),
        user_const=np.ascontiguousarray(user_const, dtype=np.float32),
        movie_const=np.ascontiguousarray(movie_const, dtype=np.float32),
        user_hidden_kernel=np.ascontiguousarray(user_kernel, dtype=np.float32),
        movie_hidden=np.ascontiguousarray(movie_hidden, dtype=np.float32),
        movie_hidden_exp=np.ascontiguousarray(hidden_exp_t.T),
        movie_hidden_t=hidden_t, movie_hidden_exp_t=hidden_exp_t,
        w2=np.ascontiguousarray(w2, dtype=np.float32), has_main=has_main, has_side=has_side)


@njit(fastmath=True, inline="always")
def _four_rows(a0, a1, a2, a3, u, eu, w, v_row, ev_row, m0, m1):
    """Adds w[j] * (max(u[j] + v, 0) + min(exp(u[j]) exp(v), 1)) to four users' rows."""
    zero, one = np.float32(0.0), np.float32(1.0)
    for i in range(m1 - m0):
        v, ev = v_row[m0 + i], ev_row[m0 + i]
        a0[i] += w * (max(u[0] + v, zero) + min(eu[0] * ev, one))
        a1[i] += w * (max(u[1] + v, zero) + min(eu[1] * ev, one))
        a2[i] += w * (max(u[2] + v, zero) + min(eu[2] * ev, one))
        a3[i] += w * (max(u[3] + v, zero) + min(eu[3] * ev, one))


@njit(parallel=True, fastmath=True, cache=True)
def _side_all(u_hidden, u_exp, v_t, ev_t, w2, out):
    """out[b, m] += sum_h w2[h] (max(U[b,h] + V[m,h], 0) + min(exp(U) exp(V), 1)).

    Tiles of movies run in parallel; within a tile, users four at a time (the block is padded
    to a multiple of 4 by the caller). Each (b, m) is a sum over h in a fixed order, whichever
    thread runs it, so the scores do not depend on the number of threads.
    """
    n_b, n_h = u_hidden.shape
    n_m = v_t.shape[1]
    for t in prange((n_m + TILE - 1) // TILE):
        m0 = t * TILE
        m1 = min(n_m, m0 + TILE)
        acc = np.zeros((4, TILE), np.float32)
        u = np.zeros(4, np.float32)
        eu = np.zeros(4, np.float32)
        for b in range(0, n_b, 4):
            acc[:] = 0
            for h in range(n_h):
                for j in range(4):
                    u[j] = u_hidden[b + j, h]
                    eu[j] = u_exp[b + j, h]
                _four_rows(acc[0], acc[1], acc[2], acc[3], u, eu, w2[h], v_t[h], ev_t[h], m0, m1)
            for j in range(4):
                for i in range(m1 - m0):
                    out[b + j, m0 + i] += acc[j, i]


@njit(parallel=True, fastmath=True, cache=True)
def _side_all_exp(u_hidden, v_t, w2, out):
    """The same sum with one exp per term: for weights too large for the product trick."""
    n_b, n_h = u_hidden.shape
    n_m = v_t.shape[1]
    for t in prange((n_m + TILE - 1) // TILE):
        m0 = t * TILE
        m1 = min(n_m, m0 + TILE)
        acc = np.zeros(TILE, np.float32)
        for b in range(n_b):
            acc[:] = 0
            for h in range(n_h):
                ub, w = u_hidden[b, h], w2[h]
                for i in range(m1 - m0):
                    x = ub + v_t[h, m0 + i]
                    acc[i] += w * (max(x, np.float32(0.0))
                                   + min(np.float32(math.exp(x)), np.float32(1.0)))
            for i in range(m1 - m0):
                out[b, m0 + i] += acc[i]


@njit(fastmath=True, inline="always")
def _pair_term(u, eu, v_row, ev_row, w2, exact_exp):
    """The side term of one (user, movie) pair from their rows of U and V (and exps): the sum
    over h of w2[h] * (elu(u[h] + v[h]) + 1), by the product trick unless ``exact_exp``."""
    zero, one = np.float32(0.0), np.float32(1.0)
    s = np.float32(0.0)
    if exact_exp:
        for h in range(u.shape[0]):
            x = u[h] + v_row[h]
            s += w2[h] * (max(x, zero) + min(np.float32(math.exp(x)), one))
    else:
        for h in range(u.shape[0]):
            s += w2[h] * (max(u[h] + v_row[h], zero) + min(eu[h] * ev_row[h], one))
    return s


@njit(parallel=True, fastmath=True, cache=True)
def _side_pairs(u_hidden, u_exp, v, ev, w2, movies, exact_exp, out):
    """out[b, j] += the side term for user b and movie movies[b, j] (candidate re-scoring).

    Here a movie's units are contiguous (``v`` is (n_movies, H)), so the sum over h of one
    (user, movie) pair vectorises; the product trick applies unless ``exact_exp``.
    """
    n_b, n_c = movies.shape
    for b in prange(n_b):
        for j in range(n_c):
            m = movies[b, j]
            if m < 0:
                continue
            out[b, j] += _pair_term(u_hidden[b], u_exp[b], v[m], ev[m], w2, exact_exp)


def product_trick_is_exact(weights: ScoringWeights, u_hidden: np.ndarray) -> bool:
    """True when exp(U) exp(V) cannot overflow or underflow float32 for this block."""
    return bool(np.abs(u_hidden).max(initial=0.0) < EXP_SAFE
                and np.abs(weights.movie_hidden_t).max(initial=0.0) < EXP_SAFE)


def side_branch(weights: ScoringWeights, users: np.ndarray, out: np.ndarray,
                exact_exp: bool = False) -> None:
    """Adds the side branch's term to ``out`` (B, n_movies) for the block ``users`` (B,)."""
    if not weights.has_side:
        return
    u_hidden = weights.user_hidden(users)
    if exact_exp or not product_trick_is_exact(weights, u_hidden):
        _side_all_exp(u_hidden, weights.movie_hidden_t, weights.w2, out)
        return
    pad = -len(users) % 4  # the kernel takes users four at a time
    if pad:
        u_hidden = np.concatenate([u_hidden, np.zeros((pad, u_hidden.shape[1]), np.float32)])
        padded = np.zeros((len(out) + pad, out.shape[1]), np.float32)
        padded[: len(out)] = out
    else:
        padded = out
    _side_all(u_hidden, np.exp(u_hidden), weights.movie_hidden_t, weights.movie_hidden_exp_t,
              weights.w2, padded)
    if pad:
        out[:] = padded[: len(out)]


def score_block(weights: ScoringWeights, users: np.ndarray, exact_exp: bool = False
                ) -> np.ndarray:
    """Predicted ratings (B, n_movies) of every movie for a block of user indices."""
    users = np.asarray(users, dtype=np.int64)
    out = np.ascontiguousarray(weights.main_scores(users), dtype=np.float32)
    side_branch(weights, users, out, exact_exp)
    return out


def score_pairs(weights: ScoringWeights, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Predicted ratings (B, C) of the movies ``movies[b]`` (-1 = none) for each user b."""
    users = np.asarray(users, dtype=np.int64)
    movies = np.ascontiguousarray(movies, dtype=np.int64)
    safe = np.where(movies >= 0, movies, 0)
    emb, const = weights.movie_emb[safe], weights.movie_const[safe]  # (B, C, K), (B, C)
    out = const + weights.user_const[users][:, None]
    if weights.has_main:
        out += np.einsum("bk,bck->bc", weights.user_emb[users], emb)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if weights.has_side:
        u_hidden = weights.user_hidden(users)
        exact_exp = not product_trick_is_exact(weights, u_hidden)
        _side_pairs(u_hidden, np.exp(np.minimum(u_hidden, EXP_SAFE)), weights.movie_hidden,
                    weights.movie_hidden_exp, weights.w2, movies, exact_exp, out)
    return out


@njit(parallel=True, fastmath=True, cache=True)
def _side_each_pair(u_hidden, u_exp, rows, v, ev, w2, movies, exact_exp, out):
    """out[i] += the side term for pair i: the user whose U row is ``u_hidden[rows[i]]`` and
    the movie ``movies[i]``. Each user's U (and its exp) is computed once, however many of
    their pairs are scored; the product trick applies unless ``exact_exp``."""
    for i in prange(rows.shape[0]):
        r, m = rows[i], movies[i]
        out[i] += _pair_term(u_hidden[r], u_exp[r], v[m], ev[m], w2, exact_exp)


def predict_pairs(weights: ScoringWeights, users: np.ndarray, movies: np.ndarray
                  ) -> np.ndarray:
    """The model's output (float64) for each (users[i], movies[i]) pair, as the Keras model's
    ``predict`` gives it up to float32 rounding: a rating model's stars, a ranking score."""
    users = np.asarray(users, dtype=np.int64)
    movies = np.ascontiguousarray(movies, dtype=np.int64)
    out = weights.movie_const[movies] + weights.user_const[users]
    if weights.has_main:
        out += np.einsum("ik,ik->i", weights.user_emb[users], weights.movie_emb[movies])
    out = np.ascontiguousarray(out, dtype=np.float32)
    if weights.has_side:
        distinct, rows = np.unique(users, return_inverse=True)
        u_hidden = weights.user_hidden(distinct)
        exact_exp = not product_trick_is_exact(weights, u_hidden)
        _side_each_pair(u_hidden, np.exp(np.minimum(u_hidden, EXP_SAFE)),
                        np.ascontiguousarray(rows, dtype=np.int64), weights.movie_hidden,
                        weights.movie_hidden_exp, weights.w2, movies, exact_exp, out)
    return out.astype(np.float64)
