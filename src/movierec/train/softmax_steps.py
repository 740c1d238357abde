"""The softmax objective's part of the training loop: one step of a batch against its pool,
and the loss of held-out positives against pools drawn once (``movierec.train.pools``).

:class:`SoftmaxSteps` is a part of :class:`movierec.train.steps.TrainLoop`, kept in its own
module: it reads the loop's tables, optimiser state, strategy and helpers (``_share``,
``_catch_up_rows``, ``_table_columns``, ``_all_reduce``, ``_apply``) and adds no state of its
own but a cache of compiled held-out losses.
"""

from __future__ import annotations

import tensorflow as tf

from movierec.train.pools import Pools


class SoftmaxSteps:
    """The softmax step and held-out loss of a ``TrainLoop`` built with ``pools``."""

    def _softmax_step(self, users, movies, start, powers) -> tf.Tensor:
        """One step of the softmax objective on one replica: this replica's share of the
        batch's users, each scored against the whole pool (``movierec.train.pools``)."""
        pools, b = self.pools, self.batch_size
        step = self.step.assign_add(1)
        batch_users, positives = users[start:start + b], movies[start:start + b]
        n = tf.size(batch_users)
        pool, columns, drawn, log_q = self._draw_pool(pools, positives, step)
        user_rows, user_at = tf.unique(batch_users)
        distinct = [user_rows, pool]  # the pool is distinct already
        lo, hi = self._share(n)
        mine_users, mine_columns = batch_users[lo:hi], columns[lo:hi]
        caught = self._catch_up_rows(step, distinct, powers)
        scale = tf.cast(n, tf.float32)
        if self.pooled.kernel == "numba":
            terms, grads, dense_grads = self._host_grads(pools, distinct, user_at[lo:hi],
                                                         mine_users, mine_columns, drawn, log_q,
                                                         scale)
        else:
            terms, grads, dense_grads = self._tf_grads(pools, distinct, mine_users,
                                                       mine_columns, drawn, log_q, scale)
            grads[0] = tf.math.unsorted_segment_sum(grads[0], user_at[lo:hi],
                                                    tf.size(user_rows))
        if self.rule.per_rating_l2:
            self._add_per_rating_l2(grads, distinct, (user_at[lo:hi], mine_columns), scale)
        if self.replicas > 1:  # across replicas, fixed sizes (the most a batch can touch),
            # as the all-reduce needs; the pool's rows are distinct already
            grads = [tf.pad(g, [[0, size - tf.size(d)], [0, 0]])
                     for g, d, size in zip(grads, distinct, (b, pools.size), strict=True)]
        total = tf.reduce_sum(terms)
        if self.replicas > 1:
            grads, dense_grads, total = self._all_reduce(grads, dense_grads, total)
            grads = [g[:tf.size(d)] for g, d in zip(grads, distinct, strict=True)]
        self._apply(step, distinct, grads, dense_grads, caught)
        return total

    def _host_grads(self, pools: Pools, distinct, mine_at, mine_users, mine_columns, drawn,
                    log_q, scale):
        """(terms, gradients of the distinct user and pool rows, dense gradients) by the
        pooled pass on the host, from the joined rows themselves."""
        pool = distinct[1]
        joined = [tf.gather(t, d) for t, d in zip(self.tables, distinct, strict=True)]
        if pools.sampled:
            label, col_rows = tf.fill(tf.shape(mine_columns), -1), drawn
        else:
            label, col_rows = mine_columns, tf.range(tf.size(pool))
        terms, d_user, d_pool, dense_grads = self.pooled.host_pass(
            joined[0], mine_at, joined[1], self.dense, label, mine_columns, col_rows, log_q,
            scale, rated=(mine_users, pools.pairs, pool))
        return terms, [d_user, d_pool], dense_grads

    def _tf_grads(self, pools: Pools, distinct, mine_users, mine_columns, drawn, log_q, scale):
        """(terms, gradients of each example's user row and of the pool's rows, dense
        gradients) by TensorFlow's ops, from the rows split per Keras table."""
        pool = distinct[1]
        joined = [tf.gather(self.tables[0], mine_users), tf.gather(self.tables[1], pool)]
        split_rows = self._table_columns(joined)
        feeds = self.split.feeds
        user_part = [r for r, f in zip(split_rows, feeds, strict=True) if f == 0]
        pool_part = [r for r, f in zip(split_rows, feeds, strict=True) if f == 1]
        if pools.sampled:
            terms, user_grads, pool_grads, dense_grads = \
                self.pooled.sampled_softmax_loss_and_grads(
                    user_part, pool_part, self.dense, mine_columns, drawn, scale, log_q,
                    **self._left_out(pools, mine_users, pool, mine_columns, drawn))
        else:
            terms, user_grads, pool_grads, dense_grads = self.pooled.softmax_loss_and_grads(
                user_part, pool_part, self.dense, mine_columns, scale, log_q,
                **self._left_out(pools, mine_users, pool, mine_columns))
        grads = [tf.concat(user_grads, 1) if len(user_grads) > 1 else user_grads[0],
                 tf.concat(pool_grads, 1) if len(pool_grads) > 1 else pool_grads[0]]
        return terms, grads, dense_grads

    def _add_per_rating_l2(self, grads, distinct, at, scale) -> None:
        """Adds the per-rating L2 penalty's gradient to those of the distinct user and pool
        rows: each positive's own rows, its user's and its movie's, once per positive that
        reads them (``at``: each positive's index among ``distinct``'s user rows and pool)."""
        factor = 2.0 * self.rule.per_rating_l2 / scale
        for f, (where, rows) in enumerate(zip(at, distinct, strict=True)):
            count = tf.math.unsorted_segment_sum(tf.ones_like(where, tf.float32), where,
                                                 tf.size(rows))
            grads[f] += factor * count[:, None] * tf.gather(self.tables[f], rows)

    def pooled_loss(self, users: tf.Tensor, movies: tf.Tensor, pools: Pools) -> float:
        """The mean softmax loss of positives (users, movies) at the Keras model's weights,
        in batches of the training batch size against pools drawn by ``pools`` (a held-out
        part's, with its own seed and rated pairs)."""
        n = int(users.shape[0])
        if n == 0:
            return float("nan")
        fn = self._pooled_loss_fns.get(id(pools))
        if fn is None:
            fn = self._pooled_loss_fns[id(pools)] = tf.function(
                lambda u, m, i: self._pooled_terms(u, m, i, pools))
        with self.kernel_context():
            total = sum(float(fn(users[s:s + self.batch_size], movies[s:s + self.batch_size],
                                 tf.constant(s // self.batch_size, tf.int64)))
                        for s in range(0, n, self.batch_size))
        return total / n

    def _pooled_terms(self, users, movies, index, pools: Pools) -> tf.Tensor:
        pool, columns, drawn, log_q = self._draw_pool(pools, movies, index)
        split = self.split
        user_part = [tf.gather(t, users) for t, f in zip(split.tables, split.feeds,
                                                         strict=True) if f == 0]
        pool_part = [tf.gather(t, pool) for t, f in zip(split.tables, split.feeds,
                                                        strict=True) if f == 1]
        dense = [v.read_value() for v in split.dense]
        if pools.sampled:
            terms = self.pooled.sampled_softmax_terms(
                user_part, pool_part, dense, columns, drawn, log_q,
                **self._left_out(pools, users, pool, columns, drawn))
        else:
            terms, _, _ = self.pooled.softmax_terms(user_part, pool_part, dense, columns, log_q,
                                                    **self._left_out(pools, users, pool, columns))
        return tf.reduce_sum(terms)

    @staticmethod
    def _draw_pool(pools: Pools, positives, step):
        """(pool movies, each positive's column, the shared columns (None for the batch pool),
        log q per column)."""
        if pools.sampled:
            return pools.sampled_pool(positives, step)
        pool, columns, log_q = pools.pool(positives, step)
        return pool, columns, None, log_q

    def _left_out(self, pools: Pools, users, pool, columns, drawn=None) -> dict:
        """The pooled pass's accidental hits: the rated pairs themselves for the fused kernel
        (it reads them row by row), a (B, columns) mask for TensorFlow's ops."""
        if self.pooled.kernel == "numba":
            return {"rated": (users, pools.pairs, pool)}
        if drawn is not None:
            return {"mask": pools.sampled_mask(users, tf.gather(pool, drawn))}
        return {"mask": pools.mask(users, pool, columns)}
