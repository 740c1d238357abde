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

from movierec.train.negatives import NegativeSampler

# Fibonacci hashing's multiplier (2^64 / the golden ratio, odd), as a signed 64-bit number: the
# top bits of key x multiplier (wrapping) spread consecutive keys over the whole table.
HASH_MULTIPLIER = -7046029254386353131  # 0x9E3779B97F4A7C15
BITS_PER_PAIR = 64  # the set's false-positive rate is about 1 / BITS_PER_PAIR


def _pair_hash(keys, bits: int, shift=np.right_shift, mask=np.bitwise_and):
    """The slot of each int64 key ``user * n_movies + movie`` in a set of 2^bits slots (NumPy's
    operators by default; TensorFlow's for the same numbers inside a step)."""
    return mask(shift(keys * HASH_MULTIPLIER, 64 - bits), (1 << bits) - 1)


def rated_pairs_bits(indptr: np.ndarray, movies: np.ndarray, n_movies: int
                     ) -> tuple[np.ndarray, int]:
    """(words, bits): the rated pairs of a CSR by user (``indptr``, ``movies``) as a bit set of
    2^bits bits in int32 words, a pair's bit at its :func:`_pair_hash` slot."""
    counts = np.diff(indptr)
    bits = max(16, int(np.ceil(np.log2(max(len(movies), 1) * BITS_PER_PAIR))))
    keys = np.repeat(np.arange(len(counts), dtype=np.int64), counts) * n_movies + movies
    with np.errstate(over="ignore"):
        slot = _pair_hash(keys, bits)
    words = np.zeros(1 << (bits - 5), np.uint32)
    np.bitwise_or.at(words, slot >> 5, np.left_shift(np.uint32(1), (slot & 31).astype(np.uint32)))
    return words.view(np.int32), bits


class Pools:
    """Builds pools for the positives of a batch, inside a ``tf.function``.

    ``rated``: the sampler whose (user, movie) pairs count as rated for the mask, and whose
    catalogue and distribution the negatives are drawn from; ``data_movies``: the movies of
    the positives the batches are cut from (their frequencies give ``p_data``).
    """

    def __init__(self, rated: NegativeSampler, data_movies: np.ndarray, n_movies: int,
                 negatives: int, batch_size: int, seed: int, sampled: bool = False):
        self.negatives = negatives
        catalogue = rated.catalogue
        self.full = negatives >= len(catalogue)
        self.sampled = sampled and not self.full
        self.size = len(catalogue) if self.full else batch_size + negatives  # most columns
        self.seed = seed
        self.n_movies = n_movies
        if self.sampled:  # the accidental hits' filter: a bit set of the rated pairs
            words, self.bits = rated_pairs_bits(rated.indptr, rated.movies, n_movies)
            self.rated_bits = tf.constant(words)
        else:  # each user's rated movies, CSR by user: the mask reads the batch users' rows
            self.indptr = tf.constant(rated.indptr.astype(np.int64))
            self.rated_movies = tf.constant(rated.movies.astype(np.int32))
        self.catalogue = tf.constant(catalogue, tf.int32)
        column = np.full(n_movies, -1, np.int32)
        column[catalogue] = np.arange(len(catalogue), dtype=np.int32)
        self.column = tf.constant(column)  # full pool: a movie's column
        self.cdf = tf.constant(np.cumsum(rated.probability), tf.float64)
        p_neg = np.zeros(n_movies)
        p_neg[catalogue] = rated.probability
        p_data = np.bincount(np.asarray(data_movies, np.int64), minlength=n_movies) / max(
            len(data_movies), 1)
        in_batch = 0 if self.sampled else batch_size  # the batch's positives join the pool
        # log(1 - (1 - p_data)^B (1 - p_neg)^N) per movie: log1p/expm1 keep rare movies exact.
        with np.errstate(divide="ignore"):
            log_miss = (in_batch * np.log1p(-np.minimum(p_data, 1 - 1e-12))
                        + negatives * np.log1p(-np.minimum(p_neg, 1 - 1e-12)))
            self.log_q = tf.constant(np.log(-np.expm1(log_miss)), tf.float32)

    def pool(self, positives: tf.Tensor, step: tf.Tensor):
        """(pool movies (P,), each positive's column (B,), log q per column (P,) or None)."""
        if self.full:
            return self.catalogue, tf.gather(self.column, positives), None
        movies, where = tf.unique(tf.concat([positives, self._draw(step)], 0))
        return movies, where[:tf.size(positives)], tf.gather(self.log_q, movies)

    def sampled_pool(self, positives: tf.Tensor, step: tf.Tensor):
        """With ``sampled``: (pool movies (P,), each positive's column (B,), the sampled
        movies' distinct columns (N',), log q per column (P,))."""
        movies, where = tf.unique(tf.concat([positives, self._draw(step)], 0))
        n = tf.size(positives)
        drawn, _ = tf.unique(where[n:])
        return movies, where[:n], drawn, tf.gather(self.log_q, movies)

    def sampled_mask(self, users: tf.Tensor, movies: tf.Tensor) -> tf.Tensor:
        """(B, N) True where user b (probably) rated movie n: every rated pair, and about
        1 / BITS_PER_PAIR of the others (the bit set's false positives)."""
        keys = (tf.cast(users, tf.int64)[:, None] * self.n_movies
                + tf.cast(movies, tf.int64)[None, :])
        slot = _pair_hash(keys, self.bits, tf.bitwise.right_shift, tf.bitwise.bitwise_and)
        word = tf.gather(self.rated_bits, tf.bitwise.right_shift(slot, 5))
        bit = tf.bitwise.right_shift(word, tf.cast(tf.bitwise.bitwise_and(slot, 31), tf.int32))
        return tf.bitwise.bitwise_and(bit, 1) > 0

    def _draw(self, step: tf.Tensor) -> tf.Tensor:
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)])
        u = tf.random.stateless_uniform([self.negatives], seed, dtype=tf.float64)
        pick = tf.searchsorted(self.cdf, u * self.cdf[-1], side="right")
        return tf.gather(self.catalogue, tf.minimum(pick, tf.size(self.catalogue) - 1))

    def mask(self, users: tf.Tensor, movies: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
        """(b, P) True where user b rated pool movie p and p is not b's positive column.

        Each user's rated movies (their CSR row) are looked up in the sorted pool, which is
        small: the work grows with the batch users' ratings, not with every (user, pool movie)
        pair times the log of all ratings."""
        starts = tf.gather(self.indptr, users)
        lengths = tf.cast(tf.gather(self.indptr, users + 1) - starts, tf.int32)
        rows = tf.repeat(tf.range(tf.size(users)), lengths)  # which batch user rated it
        # Each rated entry's position in the CSR arrays: its row's start plus its rank there.
        first = tf.cumsum(lengths, exclusive=True)
        rank = tf.range(tf.reduce_sum(lengths)) - tf.gather(first, rows)
        rated = tf.gather(self.rated_movies, tf.gather(starts, rows) + tf.cast(rank, tf.int64))
        order = tf.argsort(movies)
        ranked = tf.gather(movies, order)
        at = tf.minimum(tf.searchsorted(ranked, rated), tf.size(movies) - 1)
        hit = tf.cast(tf.equal(tf.gather(ranked, at), rated), tf.int32)
        n_pool = tf.size(movies)
        # A miss adds 0 wherever it points, so no entry needs filtering out.
        counts = tf.math.unsorted_segment_sum(hit, rows * n_pool + tf.gather(order, at),
                                              tf.size(users) * n_pool)
        hits = tf.reshape(counts, [tf.size(users), n_pool]) > 0
        own = tf.equal(tf.range(tf.size(movies))[None, :], columns[:, None])
        return hits & ~own
