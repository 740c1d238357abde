"""The pooled pass of the sampled softmax on the CPU host, in one call from TensorFlow: the
network's forward and backward pass over a batch's users and its pool, from the loop's joined
table rows to their gradients, with numpy's matrix products around the fused kernel of
:mod:`movierec.nets.softmax_kernel`.

What it computes is :class:`movierec.nets.pooled.PooledNet`'s pass with ``kernel="numba"``
(the same logits, loss and gradients, to float32 rounding); what it saves is TensorFlow's
per-op cost. A step of TensorFlow ops around the kernel (matrix products, splits, sums,
concatenations: some sixty ops of a few microseconds each) costs as much as the kernel itself
at a batch of 256, where one call here makes those products and sums in numpy.

Rows are *joined*, as the training loop keeps its tables: a user's embedding and bias side by
side in one row (:class:`JoinedLayout` says where), the same for a movie. The batch's users
come as their distinct rows and each example's index into them, and their gradients are summed
per distinct row, as the optimiser takes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from movierec.nets.softmax_kernel import RatedPairs, softmax_rows
from movierec.nets.spec import MOVIE, USER, NetSpec


@dataclass(frozen=True)
class JoinedLayout:
    """Where each table's columns lie in a joined row: the embedding's first column and the
    bias column (-1 without the dot-product branch), for user rows and for movie rows."""

    k: int
    hidden: int  # H, 0 without the side branch
    user_emb: int
    user_bias: int
    movie_emb: int
    movie_bias: int

    @classmethod
    def of(cls, spec: NetSpec) -> JoinedLayout:
        """The layout of rows joined in the order of ``spec.tables`` per input."""
        at = {USER: 0, MOVIE: 0}
        where = {}
        for t in spec.tables:
            where[t.name] = at[t.reads]
            at[t.reads] += t.width
        return cls(spec.latent_dim, spec.hidden_units if spec.has_side else 0,
                   where["user_embedding"], where.get("user_bias", -1),
                   where["movie_embedding"], where.get("movie_bias", -1))

    @property
    def has_main(self) -> bool:
        return self.user_bias >= 0


@njit(nogil=True, cache=True)
def _add_rows(out, index, values):
    """out[index[i]] += values[i] for every i (np.add.at, without its per-call cost)."""
    for i in range(index.shape[0]):
        row = out[index[i]]
        v = values[i]
        for j in range(v.shape[0]):
            row[j] += v[j]


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))).astype(np.float32)


def softmax_pass(layout: JoinedLayout, user_rows, user_at, pool_rows, dense, label,
                 pos_rows, col_rows, log_q, scale, users, rated: RatedPairs | None,
                 pool_movies, hits=None, grads=True, threads=1):
    """The sampled softmax of each example against columns of the pool, forward and (with
    ``grads``) backward, for L = sum(terms) / scale.

    ``user_rows`` (U, Wu): the distinct users' joined rows; ``user_at`` (B,): each example's
    row among them. ``pool_rows`` (P, Wm): the pool's joined rows; ``pool_movies`` (P,) their
    movie ids. ``dense``: the side branch's (W1 (2K, H), b1 (H,), w2 (H, 1), b2 (1,)), empty
    without one. ``col_rows`` (C,): the pool rows that are the softmax's columns (the batch
    pool: every row, in order). ``label[b]``: example b's label column, or -1 for an own logit,
    the pair (user, pool row ``pos_rows[b]``) scored on its own; a column whose pool row is
    ``pos_rows[b]`` is left out but for the label, and so is every column whose movie the user
    ``users[b]`` rated (``rated``; or where ``hits`` (B, C) is True when given instead).
    ``log_q`` (P,) or empty: subtracted from each pool row's logits.

    Returns (terms (B,), d user rows (U, Wu), d pool rows (P, Wm), d dense (as ``dense``));
    without ``grads``, terms and Nones.
    """
    f32 = np.float32
    k, h, main = layout.k, layout.hidden, layout.has_main
    user_rows, pool_rows = np.asarray(user_rows, f32), np.asarray(pool_rows, f32)
    user_at, pos_rows = np.asarray(user_at, np.int64), np.asarray(pos_rows, np.int64)
    col_rows, label = np.asarray(col_rows, np.int64), np.asarray(label, np.int32)
    n_rows, n_cols, n_pool = len(user_at), len(col_rows), len(pool_rows)
    every_row = n_cols == n_pool and np.array_equal(col_rows, np.arange(n_pool))
    u = user_rows[user_at, layout.user_emb:layout.user_emb + k]  # (B, K), per example
    m_all = pool_rows[:, layout.movie_emb:layout.movie_emb + k]
    m = m_all if every_row else m_all[col_rows]
    shift = -np.asarray(log_q, f32) if len(log_q) else np.zeros(n_pool, f32)
    own_label = label < 0
    own_any = bool(own_label.any())
    own = np.zeros(n_rows, f32)
    if own_any:  # the own logits: the pair (user b, pool row pos_rows[b])
        m_pos = m_all[pos_rows]
        own += shift[pos_rows]
    row_bias, col_bias = np.zeros(n_rows, f32), shift[col_rows]
    if main:
        row_bias = user_rows[user_at, layout.user_bias]
        col_bias = col_bias + pool_rows[col_rows, layout.movie_bias]
        if own_any:
            own += (np.einsum("bk,bk->b", u, m_pos) + row_bias
                    + pool_rows[pos_rows, layout.movie_bias])
    big_u, big_v, w2 = np.zeros((n_rows, 0), f32), np.zeros((n_cols, 0), f32), np.zeros(0, f32)
    if h:
        w1, b1, w2, b2 = (np.asarray(x, f32) for x in dense)
        w2 = w2.reshape(-1)
        big_u = u @ w1[:k]
        v_all = m_all @ w1[k:] + b1
        big_v = v_all if every_row else v_all[col_rows]
        col_bias = col_bias + b2[0]
        if own_any:
            a_own = _elu(big_u + v_all[pos_rows])
            own += a_own @ w2 + b2[0]
    emb = (u, m) if main else (np.zeros((n_rows, 0), f32), np.zeros((n_cols, 0), f32))
    terms, _, g_own, d_big_u, d_big_v, d_w2, du, d_cols, row_sums, col_sums = softmax_rows(
        *emb, row_bias, col_bias, own, label, big_u, big_v, w2, pos_rows, col_rows, scale,
        users, rated, None if rated is None else np.asarray(pool_movies)[col_rows], hits=hits,
        grads=grads, threads=threads)
    if not grads:
        return terms, None, None, None
    d_user, d_pool = np.zeros_like(user_rows), np.zeros_like(pool_rows)
    if not main:
        du, d_cols = np.zeros((n_rows, k), f32), np.zeros((n_cols, k), f32)
    d_pos = np.zeros((n_rows, k), f32) if own_any else None  # per example's own pool row
    if main:
        if own_any:
            du += g_own[:, None] * m_pos
            d_pos += g_own[:, None] * u
        d_user[:, layout.user_bias] = np.bincount(user_at, row_sums + g_own, len(user_rows))
        d_pool[:, layout.movie_bias] = (col_sums if every_row
                                        else np.bincount(col_rows, col_sums, n_pool))
        if own_any:
            d_pool[:, layout.movie_bias] += np.bincount(pos_rows, g_own, n_pool)
    d_dense = []
    if h:
        d_hidden_u, d_b1, d_w2_total = d_big_u, d_big_v.sum(0), d_w2
        d_w1 = np.empty_like(w1)
        d_w1[k:] = m.T @ d_big_v
        if own_any:  # the own pairs' side branch: elu'(z) = min(exp(z), 1) = a + 1 below 0
            dz_own = (g_own[:, None] * w2) * np.where(a_own > 0, f32(1.0), a_own + f32(1.0))
            d_hidden_u = d_hidden_u + dz_own
            d_b1 = d_b1 + dz_own.sum(0)
            d_w1[k:] += m_pos.T @ dz_own
            d_pos += dz_own @ w1[k:].T
            d_w2_total = d_w2_total + a_own.T @ g_own
        d_w1[:k] = u.T @ d_hidden_u
        du += d_hidden_u @ w1[:k].T
        d_cols += d_big_v @ w1[k:].T
        d_dense = [d_w1, d_b1, d_w2_total.reshape(-1, 1).astype(f32),
                   np.array([row_sums.sum() + g_own.sum()], f32)]
    _add_rows(d_user[:, layout.user_emb:layout.user_emb + k], user_at, du)
    emb_grads = d_pool[:, layout.movie_emb:layout.movie_emb + k]
    if every_row:
        emb_grads += d_cols
    else:
        _add_rows(emb_grads, col_rows, d_cols)
    if own_any:
        _add_rows(emb_grads, pos_rows, d_pos)
    return terms, d_user, d_pool, d_dense
