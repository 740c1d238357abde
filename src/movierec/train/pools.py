"""The movies each batch of the softmax objective is scored against: a shared pool.

For a batch of B positives (user b rated movie i_b), the pool is the batch's own positive
movies plus ``train.negatives`` movies drawn from the sampler's distribution (uniform over the
catalogue, or popularity), de-duplicated. Every user of the batch is scored against the whole
pool, and the softmax over the pool is corrected for how the pool was drawn (the log-Q
correction of sampled softmax): movie j's logit loses ``log q_j``, with ``q_j`` the
probability that j is in the pool,

    q_j = 1 - (1 - p_data(j)) ** B * (1 - p_neg(j)) ** N,

``p_data`` being j's share of the fit ratings (how the batch's positives are drawn) and
``p_neg`` the sampler's probability. A pool movie the user rated, other than the positive
itself (an accidental hit), is left out of that user's softmax. When ``train.negatives`` is at
least the catalogue, the pool is the whole catalogue and the loss is the exact softmax, with
no correction.

The draws are stateless, keyed on (seed, step): every replica of a ``tf.distribute`` strategy
builds the same pool without an exchange, and a resumed run draws what the killed one would
have.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from numba import njit

from movierec.nets.softmax_kernel import RatedPairs
from movierec.train.negatives import NegativeSampler


class Pools:
    """Builds pools for the positives of a batch, inside a ``tf.function``.

    ``rated``: the sampler whose (user, movie) pairs count as rated for the mask, and whose
    catalogue and distribution the negatives are drawn from; ``data_movies``: the movies of
    the positives the batches are cut from (their frequencies give ``p_data``).
    """

    def __init__(self, rated: NegativeSampler, data_movies: np.ndarray, n_movies: int,
                 negatives: int, batch_size: int, seed: int, sampled: bool = False,
                 batch_negatives: int = 0, threads: int = 1):
        self.negatives, self.threads = negatives, threads
        catalogue = rated.catalogue
        self.full = negatives >= len(catalogue)
        self.sampled = sampled and not self.full
        # sampled: how many of the batch's first positives join the sampled movies as every
        # positive's negatives (the batch is shuffled, so they are drawn as ratings are).
        self.batch_negatives = min(batch_negatives, batch_size) if self.sampled else 0
        self.size = len(catalogue) if self.full else batch_size + negatives  # most columns
        self.seed = seed
        # Each user's rated movies, CSR by user: the masks read the batch users' rows.
        self.pairs = RatedPairs(np.ascontiguousarray(rated.indptr, np.int64),
                                np.ascontiguousarray(rated.movies, np.int32), n_movies)
        self.catalogue = tf.constant(catalogue, tf.int32)
        column = np.full(n_movies, -1, np.int32)
        column[catalogue] = np.arange(len(catalogue), dtype=np.int32)
        self.column = tf.constant(column)  # full pool: a movie's column
        self.cdf = tf.constant(np.cumsum(rated.probability), tf.float64)
        p_neg = np.zeros(n_movies)
        p_neg[catalogue] = rated.probability
        p_data = np.bincount(np.asarray(data_movies, np.int64), minlength=n_movies) / max(
            len(data_movies), 1)
        # The batch's positives (all of them, or the sampled pool's first batch_negatives)
        # join the pool.
        in_batch = self.batch_negatives if self.sampled else batch_size
        # log(1 - (1 - p_data)^B (1 - p_neg)^N) per movie: log1p/expm1 keep rare movies exact.
        with np.errstate(divide="ignore"):
            log_miss = (in_batch * np.log1p(-np.minimum(p_data, 1 - 1e-12))
                        + negatives * np.log1p(-np.minimum(p_neg, 1 - 1e-12)))
            self.log_q_host = np.log(-np.expm1(log_miss)).astype(np.float32)
        self.log_q = tf.constant(self.log_q_host)
        self.catalogue_host, self.column_host = np.asarray(catalogue, np.int32), column
        self._seen = np.full(n_movies, -1, np.int32)  # first_unique's scratch
        self._draws_fn = tf.function(
            lambda first, n: tf.map_fn(self._draw, tf.range(first, first + n),
                                       fn_output_signature=tf.int32),
            input_signature=[tf.TensorSpec([], tf.int64)] * 2)

    def pool(self, positives: tf.Tensor, step: tf.Tensor):
        """(pool movies (P,), each positive's column (B,), log q per column (P,) or None)."""
        if self.full:
            return self.catalogue, tf.gather(self.column, positives), None
        movies, where = tf.unique(tf.concat([positives, self._draw(step)], 0))
        return movies, where[:tf.size(positives)], tf.gather(self.log_q, movies)

    def sampled_pool(self, positives: tf.Tensor, step: tf.Tensor):
        """With ``sampled``: (pool movies (P,), each positive's column (B,), the shared
        negatives' distinct columns (N',): the sampled movies and the first
        ``batch_negatives`` positives' movies, log q per column (P,))."""
        movies, where = tf.unique(tf.concat([positives, self._draw(step)], 0))
        n = tf.size(positives)
        drawn, _ = tf.unique(tf.concat([where[:self.batch_negatives], where[n:]], 0))
        return movies, where[:n], drawn, tf.gather(self.log_q, movies)

    def draws(self, first_step: int, n_steps: int) -> np.ndarray:
        """(n_steps, negatives) int32: the movies :meth:`pool` draws at steps first_step ..
        first_step + n_steps - 1, for pools built on the host (:meth:`host_pool`)."""
        if self.full:
            return np.zeros((n_steps, 0), np.int32)
        return self._draws_fn(tf.constant(first_step, tf.int64),
                              tf.constant(n_steps, tf.int64)).numpy()

    def host_pool(self, positives: np.ndarray, draw: np.ndarray):
        """:meth:`pool` (or with ``sampled``, :meth:`sampled_pool`) in numpy, from the step's
        ``draw``: (pool movies, each positive's column, the shared columns or None, log q per
        column or None)."""
        if self.full:
            return self.catalogue_host, self.column_host[positives], None, None
        movies, where = self.first_unique(np.concatenate([positives, draw]), self._seen)
        n = len(positives)
        drawn = None
        if self.sampled:
            drawn, _ = self.first_unique(
                np.concatenate([where[:self.batch_negatives], where[n:]]),
                np.full(len(movies), -1, np.int32))
        return movies, where[:n], drawn, self.log_q_host[movies]

    @staticmethod
    def first_unique(values: np.ndarray, seen: np.ndarray):
        """(the distinct values in order of first appearance, each value's index among
        them): ``tf.unique``'s answer. ``seen``: int32 scratch covering the values, all -1,
        left so."""
        return _first_unique(np.asarray(values, np.int32), seen)

    def sampled_mask(self, users: tf.Tensor, movies: tf.Tensor) -> tf.Tensor:
        """(B, N) True where user b rated movie n (an accidental hit)."""
        return self._rated(users, movies)

    def _rated(self, users: tf.Tensor, movies: tf.Tensor) -> tf.Tensor:
        """(B, P) True where user b rated movie p: a fused CPU kernel through
        ``tf.numpy_function``, which reads the CSR arrays in place (no graph constants)."""
        def grid(u, m):
            return self.pairs.grid(u, m, self.threads)
        out = tf.numpy_function(grid, [users, movies], tf.bool, stateful=False)
        return tf.reshape(out, [tf.size(users), tf.size(movies)])

    def _draw(self, step: tf.Tensor) -> tf.Tensor:
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)])
        u = tf.random.stateless_uniform([self.negatives], seed, dtype=tf.float64)
        pick = tf.searchsorted(self.cdf, u * self.cdf[-1], side="right")
        return tf.gather(self.catalogue, tf.minimum(pick, tf.size(self.catalogue) - 1))

    def mask(self, users: tf.Tensor, movies: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
        """(b, P) True where user b rated pool movie p and p is not b's positive column."""
        own = tf.equal(tf.range(tf.size(movies))[None, :], columns[:, None])
        return self._rated(users, movies) & ~own


@njit(nogil=True, cache=True)
def _first_unique(values, seen):
    distinct = np.empty(values.shape[0], np.int32)
    where = np.empty(values.shape[0], np.int32)
    n = 0
    for i in range(values.shape[0]):
        c = seen[values[i]]
        if c < 0:
            c = n
            seen[values[i]] = n
            distinct[n] = values[i]
            n += 1
        where[i] = c
    for j in range(n):
        seen[distinct[j]] = -1
    return distinct[:n], where
