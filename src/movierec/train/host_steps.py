"""The softmax objective's training steps on the CPU host: each step's pool, the pooled pass
(:func:`movierec.nets.pooled_host.softmax_pass`) and Adam on the touched rows and the Dense
weights, in numpy and numba, with no TensorFlow op inside the step.

Why: at a batch of 256, the TensorFlow step around the fused kernel is some 140 small ops
(gathers, scatters, Adam's arithmetic, the matrix products), which cost about as much as the
kernel's work; and the kernel, called between them through ``tf.numpy_function``, runs slower
than on its own, its threads meeting TensorFlow's. Here a step is a few calls into numba and
numpy's single-threaded BLAS.

Where: :func:`runs_on_host` says which loops take this path: one device (no replicas), the
fused kernel (``train.pair_kernel: numba``, the CPU's), and Adam on the touched rows
(``train.optimizer: adam``, ``train.table_updates: sparse``, LazyAdam's rule) with no
whole-table penalty: the ranking configuration. Every other loop runs TrainLoop's TensorFlow
step, which computes the same thing and is what the tests compare this path against.

State: working copies of the loop's tables, optimiser slots, Dense weights and step count,
taken by :meth:`HostSteps.pull` and written back by :meth:`HostSteps.push` at the end of each
epoch, before the Keras model is given the weights; checkpoints, resume and scoring see what
the TensorFlow step would have left. The pools are the TensorFlow step's own draws, keyed on
(seed, step) (:meth:`movierec.train.pools.Pools.draws`), so both paths train the same model,
to float rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from movierec.nets.pooled_host import softmax_pass
from movierec.nets.softmax_kernel import in_row_chunks, serial_and_parallel
from movierec.train.rules import ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON

F32 = np.float32


def runs_on_host(loop) -> bool:
    """Whether ``loop`` (a TrainLoop) takes its softmax steps here."""
    rule = loop.rule
    return (loop.pools is not None and loop.pooled.kernel == "numba" and loop.replicas == 1
            and rule.adam and rule.table_updates == "sparse" and not rule.whole_table_l2)


def _adam(w, m, v, g, alpha):
    """Adam's rule on one row (or one flat weight) in place: ``UpdateRule``'s arithmetic."""
    one, b1, b2 = F32(1.0), F32(ADAM_BETA_1), F32(ADAM_BETA_2)
    for j in range(w.shape[0]):
        m[j] += (g[j] - m[j]) * (one - b1)
        v[j] += (g[j] * g[j] - v[j]) * (one - b2)
        w[j] -= alpha * m[j] / (np.sqrt(v[j]) + F32(ADAM_EPSILON))


_adam_inline = njit(inline="always")(_adam)


def _adam_rows(table, m, v, rows, g, alpha):
    for i in prange(rows.shape[0]):  # distinct rows: no two iterations write one row
        r = rows[i]
        _adam_inline(table[r], m[r], v[r], g[i], alpha)


# Each table's touched rows lie scattered over it (tens of MB at MovieLens-20M scale): the
# update waits on memory more than it computes, so two threads fetch twice the rows at once.
# (serial, parallel), as in_row_chunks takes them.
ADAM_ROWS = serial_and_parallel(_adam_rows)
adam_flat = njit(nogil=True, cache=True)(_adam)


def adam_alpha(learning_rate: float, step: int) -> np.float32:
    """Keras' Adam step size at ``step`` in float32, as ``UpdateRule.adam_alpha``."""
    t = F32(step)
    return F32(F32(learning_rate) * np.sqrt(F32(1.0) - F32(ADAM_BETA_2) ** t)
               / (F32(1.0) - F32(ADAM_BETA_1) ** t))


class HostSteps:
    """The softmax steps of a TrainLoop for which :func:`runs_on_host` holds."""

    def __init__(self, loop):
        self.loop, self.pools, self.rule = loop, loop.pools, loop.rule
        self.layout, self.threads = loop.pooled.layout, loop.pooled.threads
        self.is_kernel = loop.split.is_kernel
        self._seen = np.full(loop.split.spec.n_users, -1, np.int32)  # first_unique's scratch
        self.pull()

    def pull(self) -> None:
        """Takes the loop's weights, optimiser state and step count."""
        loop = self.loop
        self.tables = [np.array(t.numpy()) for t in loop.tables]
        self.slots = [[np.array(s.numpy()) for s in group] for group in loop.table_slots]
        self.dense = [np.array(v.numpy()) for v in loop.dense]
        self.dense_slots = [[np.array(s.numpy()) for s in group] for group in loop.dense_slots]
        self.step = int(loop.step.numpy())

    def push(self) -> None:
        """Writes them back into the loop's variables."""
        loop = self.loop
        pairs = [*zip(loop.tables, self.tables, strict=True),
                 *zip(loop.dense, self.dense, strict=True)]
        for variables, values in zip([*loop.table_slots, *loop.dense_slots],
                                     [*self.slots, *self.dense_slots], strict=True):
            pairs += zip(variables, values, strict=True)
        for variable, value in pairs:
            variable.assign(value)
        loop.step.assign(self.step)

    def run_steps(self, users, movies, first_step: int, n_steps: int,
                  batch_size: int) -> float:
        """Batches first_step .. first_step + n_steps - 1 of the examples (users, movies);
        returns the sum of their loss terms."""
        users, movies = np.asarray(users), np.asarray(movies)
        draws = self.pools.draws(self.step + 1, n_steps)
        total = 0.0
        for i in range(n_steps):  # under TrainLoop.kernel_context
            start = (first_step + i) * batch_size
            self.step += 1
            total += self._step(users[start:start + batch_size],
                                movies[start:start + batch_size], draws[i])
        return total

    def _step(self, users, positives, draw) -> float:
        pools, rule, n = self.pools, self.rule, len(users)
        pool, columns, drawn, log_q = pools.host_pool(positives, draw)
        user_rows, user_at = pools.first_unique(users, self._seen)
        joined = [self.tables[0][user_rows], self.tables[1][pool]]
        if pools.sampled:
            label, col_rows = np.full(n, -1, np.int32), drawn
        else:
            label, col_rows = columns, np.arange(len(pool))
        terms, d_user, d_pool, d_dense = softmax_pass(
            self.layout, joined[0], user_at, joined[1], self.dense, label, columns, col_rows,
            np.zeros(0, F32) if log_q is None else log_q, F32(n), users, pools.pairs, pool,
            threads=self.threads)
        grads = [d_user, d_pool]
        if rule.per_rating_l2:  # each positive's own rows: its user's, and its movie's
            factor = F32(2.0 * rule.per_rating_l2 / n)
            for f, at in enumerate((user_at, columns)):
                count = np.bincount(at, minlength=len(joined[f])).astype(F32)
                grads[f] += (factor * count)[:, None] * joined[f]
        alpha = adam_alpha(rule.learning_rate, self.step)
        for table, (m, v), rows, g in zip(self.tables, self.slots, (user_rows, pool), grads,
                                          strict=True):
            in_row_chunks(self.threads, ADAM_ROWS, table, m, v, rows, g, alpha)
        for w, (m, v), g, kernel in zip(self.dense, self.dense_slots, d_dense, self.is_kernel,
                                        strict=True):
            if kernel and rule.l2_dense:
                g = g + F32(2.0 * rule.l2_dense) * w
            adam_flat(w.reshape(-1), m.reshape(-1), v.reshape(-1), g.reshape(-1), alpha)
        return float(terms.sum(dtype=F32))
