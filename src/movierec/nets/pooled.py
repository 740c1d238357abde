"""Scores of a batch of users against a shared pool of movies, forward and backward, at O(H)
per (user, movie) pair: the building block of objectives with many negatives.

The side branch's first Dense layer is linear in the concatenated embeddings,

    W1 [u; m] + b1 = U[u] + V[m],    U = u W1[:K],    V = m W1[K:] + b1,

so the B users of a batch and the P movies of a pool are each projected once (B x H and P x H);
every pair then costs an add, elu and a dot with the second layer's kernel, instead of a
(2K x H) product. The dot-product branch is one (B x K) (K x P) product. What this module
computes is exactly the network a ``NetSpec`` describes (residual, mf or deep) for every pair;
tests/nets/test_pooled.py checks the scores against the Keras model's output and every gradient
against a GradientTape through the Keras model's layers.

The loss here is the sampled softmax, in two shapes:

* every user against the whole pool (:meth:`PooledNet.softmax_loss_and_grads`): for user b,
  the logits of the pool's movies, each corrected by the log of its sampling probability
  (``log_q``; zero for a uniform draw), a masked entry (an accidental hit: a pool movie the
  user rated) left out; the loss term is ``logsumexp(logits_b) - logits_b[positive_b]``;
* every user against its own positive and the pool's sampled columns only
  (:meth:`PooledNet.sampled_softmax_loss_and_grads`): B + B x N pairs instead of B x P, the
  aligned (user, positive) pairs scored on their own (:meth:`PooledNet.pair_scores`).

Gradients are those of ``L = sum(terms) / scale``, as in :mod:`movierec.nets.fused`: one
gradient row per user of the batch and per movie of the pool (duplicates not summed).

The (B, P) grid of pairs is most of a step's work. ``kernel="tensorflow"`` builds it from
TensorFlow ops ((B, P, H) tensors, an exp per entry: right for accelerators); with
``kernel="numba"`` the softmaxes' loss and gradients run the fused CPU kernel of
:mod:`movierec.nets.softmax_kernel`, one ``tf.numpy_function`` call a step (no (B, P, H)
tensor, no exp per entry, the accidental hits read from the ratings as it goes). Both compute
the same values to float32 rounding; :meth:`PooledNet.scores` and :meth:`PooledNet.backward`
are TensorFlow's either way.
"""

from __future__ import annotations

import tensorflow as tf

from movierec.core.config import PAIR_KERNELS
from movierec.nets.pooled_host import JoinedLayout, softmax_pass
from movierec.nets.spec import MOVIE, USER, NetSpec


class PooledNet:
    """The pair-decomposed pass of the network ``spec`` describes (no dropout)."""

    def __init__(self, spec: NetSpec, kernel: str = "numba", threads: int = 1):
        if spec.dropout:
            raise ValueError(f"PooledNet: received dropout={spec.dropout!r} (expected 0: the "
                             "pooled pass has no per-pair dropout masks)")
        if kernel not in PAIR_KERNELS:
            raise ValueError(f"PooledNet: received kernel={kernel!r} (expected one of "
                             + ", ".join(PAIR_KERNELS) + ")")
        self.spec, self.kernel, self.threads = spec, kernel, threads
        self.k = spec.latent_dim
        # The user tables' rows and the movie tables' rows, each in the order of spec.tables.
        self.user_roles = tuple(t.name for t in spec.tables if t.reads == USER)
        self.pool_roles = tuple(t.name for t in spec.tables if t.reads == MOVIE)
        self._u = {r: i for i, r in enumerate(self.user_roles)}
        self._p = {r: i for i, r in enumerate(self.pool_roles)}
        self._d = {name: i for i, (name, _) in enumerate(spec.dense)}
        self.layout = JoinedLayout.of(spec)

    def _parts(self, user_rows, pool_rows):
        u, m = user_rows[self._u["user_embedding"]], pool_rows[self._p["movie_embedding"]]
        bu = user_rows[self._u["user_bias"]] if self.spec.has_main else None
        bm = pool_rows[self._p["movie_bias"]] if self.spec.has_main else None
        return u, m, bu, bm

    def scores(self, user_rows, pool_rows, dense):
        """(B, P) scores of every (user, pool movie) pair, and what the backward reuses (elu's
        output, (B, P, H), or None without the side branch). ``user_rows``: the rows of the
        users' tables for the batch's users (``user_roles``); ``pool_rows``: the movie tables'
        rows for the pool (``pool_roles``)."""
        u, m, bu, bm = self._parts(user_rows, pool_rows)
        s, a = 0.0, None
        if self.spec.has_main:
            s = tf.matmul(u, m, transpose_b=True) + bu + tf.transpose(bm)
        if self.spec.has_side:
            d = self._d
            w1 = tf.convert_to_tensor(dense[d["hidden/kernel"]])
            big_u = tf.matmul(u, w1[:self.k])
            big_v = tf.nn.bias_add(tf.matmul(m, w1[self.k:]), dense[d["hidden/bias"]])
            a = tf.nn.elu(big_u[:, None, :] + big_v[None, :, :])
            w2 = tf.reshape(dense[d["side_out/kernel"]], [-1])
            s = s + tf.tensordot(a, w2, 1) + dense[d["side_out/bias"]]
        return s, a

    def pair_scores(self, user_rows, movie_rows, dense):
        """(B,) scores of the aligned pairs (user b, movie b), and elu's output (B, H) or None;
        the rows as in :meth:`scores`, one movie per user."""
        u, m, bu, bm = self._parts(user_rows, movie_rows)
        s, a = 0.0, None
        if self.spec.has_main:
            s = tf.reduce_sum(u * m, 1) + bu[:, 0] + bm[:, 0]
        if self.spec.has_side:
            d = self._d
            w1 = tf.convert_to_tensor(dense[d["hidden/kernel"]])
            a = tf.nn.elu(tf.nn.bias_add(tf.matmul(u, w1[:self.k]) + tf.matmul(m, w1[self.k:]),
                                         dense[d["hidden/bias"]]))
            w2 = tf.reshape(dense[d["side_out/kernel"]], [-1])
            s = s + tf.linalg.matvec(a, w2) + dense[d["side_out/bias"]]
        return s, a

    def sampled_softmax_loss_and_grads(self, user_rows, pool_rows, dense, positives, negatives,
                                       scale, log_q=None, mask=None, rated=None):
        """(terms (B,), user row gradients, pool row gradients, dense gradients) of the
        sampled softmax of each user's positive (pool column ``positives[b]``) against the
        pool columns ``negatives`` (N,) only, each logit less ``log_q`` of its column, a
        negative column that is the user's own positive left out, and so is every pair where
        ``mask`` (B, N) is True (accidental hits). Pool row gradients are summed per pool
        row."""
        if self.kernel == "numba":
            return self._host_lists(user_rows, pool_rows, dense, tf.fill(tf.shape(positives), -1),
                                    positives, negatives, log_q, scale, mask, rated)
        dense = [tf.convert_to_tensor(v) for v in dense]
        pos_rows = [tf.gather(r, positives) for r in pool_rows]
        neg_rows = [tf.gather(r, negatives) for r in pool_rows]
        terms, logits, a_pos, a_neg = self._sampled_forward(
            user_rows, pos_rows, neg_rows, dense, positives, negatives, log_q, mask)
        g = tf.nn.softmax(logits)  # column 0 is the positive's
        g = (g - tf.one_hot(tf.zeros_like(positives), tf.shape(g)[1], dtype=g.dtype)) / scale
        neg_user, neg_grads, neg_dense = self.backward(user_rows, neg_rows, dense, g[:, 1:],
                                                       a_neg)
        pos_user, pos_grads, pos_dense = self.pair_backward(user_rows, pos_rows, dense, g[:, 0],
                                                            a_pos)
        n_pool = tf.shape(pool_rows[0])[0]
        pool_grads = [tf.math.unsorted_segment_sum(gp, positives, n_pool)
                      + tf.math.unsorted_segment_sum(gn, negatives, n_pool)
                      for gp, gn in zip(pos_grads, neg_grads, strict=True)]
        user_grads = [x + y for x, y in zip(pos_user, neg_user, strict=True)]
        dense_grads = [None if x is None else x + y
                       for x, y in zip(pos_dense, neg_dense, strict=True)]
        return terms, user_grads, pool_grads, dense_grads

    def sampled_softmax_terms(self, user_rows, pool_rows, dense, positives, negatives,
                              log_q=None, mask=None, rated=None):
        """(terms (B,)): the forward pass of :meth:`sampled_softmax_loss_and_grads`."""
        if self.kernel == "numba":
            return self._host_lists(user_rows, pool_rows, dense, tf.fill(tf.shape(positives), -1),
                                    positives, negatives, log_q, None, mask, rated)[0]
        pos_rows = [tf.gather(r, positives) for r in pool_rows]
        neg_rows = [tf.gather(r, negatives) for r in pool_rows]
        return self._sampled_forward(user_rows, pos_rows, neg_rows, dense, positives,
                                     negatives, log_q, mask)[0]

    def host_pass(self, user_rows, user_at, pool_rows, dense, label, pos_rows, col_rows,
                  log_q, scale, mask=None, rated=None):
        """:func:`movierec.nets.pooled_host.softmax_pass` in one ``tf.numpy_function`` call,
        on joined rows (arguments as there; ``rated``: (each example's user, RatedPairs, the
        pool's movies) unless ``mask`` (B, C) is given; ``log_q`` None for none; ``scale``
        None for the forward pass only). Returns (terms, d user rows, d pool rows, dense
        gradients in the order of ``spec.dense``), or the terms and Nones."""
        grads = scale is not None
        n_rows = tf.size(user_at)
        if mask is None and rated is None:  # nothing is left out for being rated
            mask = tf.zeros([n_rows, tf.size(col_rows)], tf.bool)
        if mask is not None:
            users, pairs, movies, hits = tf.zeros([n_rows], tf.int32), None, col_rows, mask
        else:
            users, pairs, movies = rated
            hits = tf.zeros([0, 0], tf.bool)
        dense = list(dense)
        n_dense = len(dense)
        log_q = tf.zeros([0]) if log_q is None else log_q
        scale = tf.constant(1.0) if scale is None else scale
        layout, threads = self.layout, self.threads

        def run(user_rows, user_at, pool_rows, label, pos_rows, col_rows, log_q, scale, users,
                movies, hits, *dense):
            terms, d_user, d_pool, d_dense = softmax_pass(
                layout, user_rows, user_at, pool_rows, dense, label, pos_rows, col_rows, log_q,
                scale, users, pairs, movies, hits=hits if pairs is None else None, grads=grads,
                threads=threads)
            if not grads:
                return terms
            return (terms, d_user, d_pool, *d_dense)
        outs = tf.numpy_function(
            run, [user_rows, user_at, pool_rows, label, pos_rows, col_rows, log_q, scale, users,
                  movies, hits, *dense],
            [tf.float32] * (3 + n_dense if grads else 1), stateful=False)
        if not grads:
            return tf.reshape(outs, [n_rows]), None, None, None
        terms, d_user, d_pool, *d_dense = outs
        return (tf.reshape(terms, [n_rows]), tf.reshape(d_user, tf.shape(user_rows)),
                tf.reshape(d_pool, tf.shape(pool_rows)),
                [tf.reshape(g, tf.shape(v)) for g, v in zip(d_dense, dense, strict=True)])

    def _host_lists(self, user_rows, pool_rows, dense, label, pos_rows, col_rows, log_q,
                    scale, mask, rated):
        """:meth:`host_pass` on rows given per table (one user row per example), with the
        gradients split back per table."""
        joined_users, joined_pool = self._join(user_rows), self._join(pool_rows)
        n_rows = tf.shape(joined_users)[0]
        terms, d_user, d_pool, d_dense = self.host_pass(
            joined_users, tf.range(n_rows), joined_pool, dense, label, pos_rows, col_rows,
            log_q, scale, mask, rated)
        if scale is None:
            return terms, None, None, None
        return terms, self._unjoin(d_user, user_rows), self._unjoin(d_pool, pool_rows), d_dense

    @staticmethod
    def _join(rows):
        return tf.concat(rows, 1) if len(rows) > 1 else rows[0]

    @staticmethod
    def _unjoin(joined, rows):
        if len(rows) == 1:
            return [joined]
        return tf.split(joined, [int(r.shape[1]) for r in rows], 1)

    def _sampled_forward(self, user_rows, pos_rows, neg_rows, dense, positives, negatives,
                         log_q, mask):
        s_pos, a_pos = self.pair_scores(user_rows, pos_rows, dense)
        s_neg, a_neg = self.scores(user_rows, neg_rows, dense)
        if log_q is not None:
            s_pos = s_pos - tf.gather(log_q, positives)
            s_neg = s_neg - tf.gather(log_q, negatives)[None, :]
        left_out = tf.equal(negatives[None, :], positives[:, None])  # the positive drawn too
        if mask is not None:
            left_out |= mask
        s_neg = tf.where(left_out, tf.constant(-1e30, s_neg.dtype), s_neg)
        logits = tf.concat([s_pos[:, None], s_neg], 1)
        terms = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.zeros_like(positives), logits)
        return terms, logits, a_pos, a_neg

    def softmax_loss_and_grads(self, user_rows, pool_rows, dense, positives, scale,
                               log_q=None, mask=None, rated=None):
        """(terms (B,), user row gradients, pool row gradients, dense gradients) of the
        sampled softmax. ``positives[b]``: the pool column of user b's positive movie;
        ``log_q`` (P,): subtracted from every logit of that column; ``mask`` (B, P) bool: True
        where a pair is left out (never at the positive)."""
        dense = [tf.convert_to_tensor(v) for v in dense]  # each variable read once
        if self.kernel == "numba":
            n_pool = tf.shape(pool_rows[0])[0]
            return self._host_lists(user_rows, pool_rows, dense, positives, positives,
                                    tf.range(n_pool, dtype=positives.dtype), log_q, scale, mask,
                                    rated)
        terms, logits, a = self.softmax_terms(user_rows, pool_rows, dense, positives, log_q,
                                              mask)
        onehot = tf.one_hot(positives, tf.shape(logits)[1], dtype=logits.dtype)
        g = (tf.nn.softmax(logits) - onehot) / scale  # d L / d s, (B, P); 0 where masked
        return (terms, *self.backward(user_rows, pool_rows, dense, g, a))

    def softmax_terms(self, user_rows, pool_rows, dense, positives, log_q=None, mask=None,
                      rated=None):
        """(terms (B,), the corrected and masked logits (B, P), elu's output or None; with the
        numba kernel, terms and two None): the sampled softmax's forward pass, arguments as
        :meth:`softmax_loss_and_grads`."""
        if self.kernel == "numba":
            n_pool = tf.shape(pool_rows[0])[0]
            terms = self._host_lists(user_rows, pool_rows, dense, positives, positives,
                                     tf.range(n_pool, dtype=positives.dtype), log_q, None, mask,
                                     rated)[0]
            return terms, None, None
        s, a = self.scores(user_rows, pool_rows, dense)
        logits = s if log_q is None else s - log_q[None, :]
        if mask is not None:
            logits = tf.where(mask, tf.constant(-1e30, logits.dtype), logits)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(positives, logits), logits, a

    def backward(self, user_rows, pool_rows, dense, g, a):
        """Row and dense gradients from ``g`` = dL/d scores (B, P) and elu's output ``a``."""
        side = None
        if self.spec.has_side:
            w2 = tf.reshape(dense[self._d["side_out/kernel"]], [-1])
            side = self._side_backward(g, a, w2)
        return self._assemble(user_rows, pool_rows, dense, g, side)

    def _assemble(self, user_rows, pool_rows, dense, g, side):
        """Row and dense gradients from ``g`` = dL/d scores (B, P) and the side branch's
        (dU, dV, dw2) (None without one)."""
        u, m, _, _ = self._parts(user_rows, pool_rows)
        d = self._d
        user_grads: list = [None] * len(user_rows)
        pool_grads: list = [None] * len(pool_rows)
        dense_grads: list = [None] * len(dense)
        du = tf.zeros_like(u)
        dm = tf.zeros_like(m)
        if self.spec.has_main:
            du += tf.matmul(g, m)
            dm += tf.matmul(g, u, transpose_a=True)
            user_grads[self._u["user_bias"]] = tf.reduce_sum(g, 1, keepdims=True)
            pool_grads[self._p["movie_bias"]] = tf.reshape(tf.reduce_sum(g, 0), [-1, 1])
        if self.spec.has_side:
            w1 = dense[d["hidden/kernel"]]
            d_big_u, d_big_v, d_w2 = side
            dense_grads[d["side_out/kernel"]] = tf.reshape(d_w2, [-1, 1])
            dense_grads[d["side_out/bias"]] = tf.reshape(tf.reduce_sum(g), [1])
            dense_grads[d["hidden/kernel"]] = tf.concat(
                [tf.matmul(u, d_big_u, transpose_a=True),
                 tf.matmul(m, d_big_v, transpose_a=True)], 0)
            dense_grads[d["hidden/bias"]] = tf.reduce_sum(d_big_v, 0)
            du += tf.matmul(d_big_u, w1[:self.k], transpose_b=True)
            dm += tf.matmul(d_big_v, w1[self.k:], transpose_b=True)
        user_grads[self._u["user_embedding"]] = du
        pool_grads[self._p["movie_embedding"]] = dm
        return user_grads, pool_grads, dense_grads

    def _side_backward(self, g, a, w2):
        """(dU (B, H), dV (P, H), dw2 (H,)) of the side branch's grid from ``g`` (B, P) and
        elu's output ``a``."""
        dz = tf.raw_ops.EluGrad(gradients=g[:, :, None] * w2, outputs=a)
        return tf.reduce_sum(dz, 1), tf.reduce_sum(dz, 0), tf.einsum("bp,bph->h", g, a)

    def pair_backward(self, user_rows, movie_rows, dense, g, a):
        """Row and dense gradients of the aligned pairs from ``g`` = dL/d scores (B,) and
        elu's output ``a`` (B, H), as :meth:`backward` for :meth:`pair_scores`."""
        u, m, _, _ = self._parts(user_rows, movie_rows)
        d = self._d
        user_grads: list = [None] * len(user_rows)
        movie_grads: list = [None] * len(movie_rows)
        dense_grads: list = [None] * len(dense)
        du = g[:, None] * m if self.spec.has_main else tf.zeros_like(u)
        dm = g[:, None] * u if self.spec.has_main else tf.zeros_like(m)
        if self.spec.has_main:
            user_grads[self._u["user_bias"]] = g[:, None]
            movie_grads[self._p["movie_bias"]] = g[:, None]
        if self.spec.has_side:
            w1 = dense[d["hidden/kernel"]]
            w2 = tf.reshape(dense[d["side_out/kernel"]], [-1])
            dense_grads[d["side_out/kernel"]] = tf.reshape(tf.linalg.matvec(a, g, transpose_a=True),
                                                           [-1, 1])
            dense_grads[d["side_out/bias"]] = tf.reshape(tf.reduce_sum(g), [1])
            dz = tf.raw_ops.EluGrad(gradients=g[:, None] * w2, outputs=a)  # (B, H)
            dense_grads[d["hidden/kernel"]] = tf.concat(
                [tf.matmul(u, dz, transpose_a=True), tf.matmul(m, dz, transpose_a=True)], 0)
            dense_grads[d["hidden/bias"]] = tf.reduce_sum(dz, 0)
            du += tf.matmul(dz, w1[:self.k], transpose_b=True)
            dm += tf.matmul(dz, w1[self.k:], transpose_b=True)
        user_grads[self._u["user_embedding"]] = du
        movie_grads[self._p["movie_embedding"]] = dm
        return user_grads, movie_grads, dense_grads
