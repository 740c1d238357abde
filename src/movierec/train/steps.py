"""The training step: one batch's loss, gradients and weight updates, many steps per call, on
one device or on every replica of a ``tf.distribute`` strategy.

The tutorial calls ``model.fit`` on numpy arrays, and at MovieLens-20M scale its time goes to
Keras' SGD updating the *whole* embedding tables on every step (momentum keeps every row
moving: 138,493 x 10 user weights for 128 ratings), and to per-step overhead: one call from
Python into TensorFlow per batch and the dozens of small ops of Keras' layers and their
recorded gradients.

This loop keeps the model and the loss and removes those costs: rows are gathered straight
from the tables, the network's forward and backward pass is written by hand in a few fused ops
(``movierec.nets.fused``, tested against a GradientTape through the Keras layers), the rows are
updated by the rules of ``movierec.train.rules`` (``lazy`` computes the tutorial's momentum rule for
the touched rows only), and many steps run inside one compiled ``tf.function`` call.

**Distribution.** The loop holds its own copy of every weight, created with the optimiser
state in the strategy's scope; the Keras model stays the holder of the weights that are
scored, checkpointed and saved (``pull`` and ``push`` copy between them, once per epoch). Every
replica holds the whole epoch's examples, so it knows the global batch's distinct rows without
an exchange; it catches those rows up, runs the forward and backward pass on its own disjoint
share of the batch, and sums its gradients into the batch's distinct rows. One all-reduce per
step sums those row gradients, the dense gradients and the loss over the replicas, and every
replica applies the same update to its own copy (variables with aggregation NONE), so the
copies stay identical without broadcasting weights. The loss is divided by the global batch,
so the summed gradient is the single-device gradient up to floating-point order.

Duplicate ids in a batch are summed first, so each row is updated once per step and every
scatter has distinct indices (deterministic on any device). ``python -m benchmarks speed``
measures the loop against the tutorial's ``model.fit`` and checks its accuracy.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from movierec.nets.denormals import flush_denormals
from movierec.nets.fused import FusedNet, dropout_keep
from movierec.nets.keras_model import PREDICT_BATCH_SIZE
from movierec.nets.pooled import PooledNet
from movierec.nets.softmax_kernel import one_blas_thread
from movierec.train.host_steps import HostSteps, runs_on_host
from movierec.train.pools import Pools
from movierec.train.row_split import RowSplitModel
from movierec.train.rules import UpdateRule
from movierec.train.softmax_steps import SoftmaxSteps

NONE = tf.VariableAggregation.NONE  # each replica updates its own copy


class NonFiniteLoss(ArithmeticError):
    """A call into TensorFlow returned a NaN or infinite summed loss (the run diverged): its
    steps ``first``..``last`` (1-based, of the epoch's ``n_steps``) are where it happened."""

    def __init__(self, value: float, first: int, last: int, n_steps: int):
        super().__init__(f"loss {value} in steps {first}-{last} of {n_steps}")
        self.value, self.first, self.last, self.n_steps = value, first, last, n_steps


class TrainLoop(SoftmaxSteps):
    """The training loop over a :class:`RowSplitModel`, many steps per TensorFlow call, under
    ``strategy`` (default: the current one, a single device outside any scope), minimising
    the spec's objective. ``rule`` comes from validated params (``UpdateRule.from_params``)."""

    def __init__(self, split: RowSplitModel, batch_size: int, rule: UpdateRule | None = None,
                 strategy: tf.distribute.Strategy | None = None, seed: int = 0,
                 pools: Pools | None = None, pair_kernel: str = "numba", pair_threads: int = 1):
        rule = rule or UpdateRule()
        self.split, self.net = split, FusedNet(split.spec)
        if (split.spec.objective == "softmax") != (pools is not None):
            raise ValueError(f"TrainLoop: objective {split.spec.objective!r} with pools="
                             f"{pools!r} (expected pools for softmax, and only for softmax)")
        self.pools = pools
        self.pooled = (PooledNet(split.spec, pair_kernel, pair_threads) if pools is not None
                       else None)
        self.objective, self.rule, self.seed = split.spec.objective, rule, seed
        self.batch_size = batch_size
        self.lazy = rule.table_updates == "lazy"
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.inputs = [0, 1]  # every spec has user and movie tables
        self.hidden_units = split.spec.hidden_units if split.spec.has_side else 0
        # The loop's tables are one per input: the user embedding and the user bias side by side
        # (n_users, K + 1), the same for movies, so a step gathers, catches up and updates one
        # table per input. ``columns[f]``: (Keras table index, width) in column order.
        self.columns = {f: [(i, int(t.shape[1])) for i, (t, g) in
                            enumerate(zip(split.tables, split.feeds, strict=True)) if g == f]
                        for f in self.inputs}
        with self.strategy.scope():  # every variable, before the first tf.function call
            def variable(value, dtype=tf.float32):
                return tf.Variable(value, dtype=dtype, trainable=False, aggregation=NONE)
            self.tables = [variable(self._joined(f)) for f in self.inputs]
            self.dense = [variable(v.read_value()) for v in split.dense]
            self.table_slots = [[variable(tf.zeros_like(t)) for _ in range(rule.n_slots)]
                                for t in self.tables]
            self.dense_slots = [[variable(tf.zeros_like(v)) for _ in range(rule.n_slots)]
                                for v in split.dense]
            self.step = variable(0, tf.int64)
            # lazy: the step each row of each input's table is up to date with
            self.row_step = ([variable(tf.zeros([t.shape[0]], tf.int64), tf.int64)
                              for t in self.tables] if self.lazy else [])
        self._powers = tf.constant(rule.powers(1))  # lazy: M^k for k untouched steps, grown
        self._pending = 0  # steps since every row was last caught up
        spec = tf.TensorSpec([None], tf.int32)
        powers = tf.TensorSpec([None, 4], tf.float32)
        from movierec.train.distribute import bounded

        # multi_worker: a call that waits on the other tasks for train.collective_timeout with
        # no step done fails (elsewhere the tf.function itself).
        self._run_steps_fn = bounded(self.strategy, tf.function(self._run_steps, input_signature=[
            spec, spec, tf.TensorSpec([None], tf.float32), spec,
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32), powers]), self.step)
        self.predict_batch = tf.function(self._predict_batch, input_signature=[spec, spec])
        self._pooled_loss_fns: dict = {}
        self._catch_up_fn = tf.function(self._catch_up_all, input_signature=[powers])
        self._pull_fn = tf.function(self._pull)
        self.host = HostSteps(self) if runs_on_host(self) else None

    def state_variables(self) -> list[tf.Variable]:
        """The optimiser's state: with the model's variables, all a resumed run needs."""
        slots = [s for group in self.table_slots + self.dense_slots for s in group]
        return [self.step, *slots, *self.row_step]

    def pull(self) -> None:
        """Copies the Keras model's weights into the loop's (every replica's copy); after the
        model's weights were set from outside (a checkpoint)."""
        self._pull_fn()
        if self.host is not None:
            self.host.pull()

    def _joined(self, f: int) -> tf.Tensor:
        """The Keras tables read by input f, side by side."""
        parts = [self.split.tables[i].read_value() for i, _ in self.columns[f]]
        return tf.concat(parts, 1) if len(parts) > 1 else parts[0]

    def _pull(self) -> None:
        for f, table in zip(self.inputs, self.tables, strict=True):
            table.assign(self._joined(f))
        for mine, theirs in zip(self.dense, self.split.dense, strict=True):
            mine.assign(theirs)

    def push(self) -> None:
        """Copies the loop's weights (the first replica's, all identical) into the model."""
        for f, table in zip(self.inputs, self.tables, strict=True):
            value = table.read_value()
            widths = [w for _, w in self.columns[f]]
            for (i, _), part in zip(self.columns[f], tf.split(value, widths, 1), strict=True):
                self.split.tables[i].assign(part)
        for mine, theirs in zip(self.dense, self.split.dense, strict=True):
            theirs.assign(mine.read_value())

    def run_steps(self, users, movies, y, negatives, first_step, n_steps) -> tf.Tensor:
        """Runs batches first_step .. first_step + n_steps - 1; returns the sum of their
        per-example losses (squared errors for the rating objective). ``negatives``: bpr's
        negative movie per triple (empty for the other objectives)."""
        with self.kernel_context():
            if self.host is not None:
                return self.host.run_steps(users, movies, int(first_step), int(n_steps),
                                           self.batch_size)
            self._pending += int(n_steps)
            self._reserve_powers(self._pending + 1)
            return self._run_steps_fn(users, movies, y, negatives, first_step, n_steps,
                                      self._powers)

    def kernel_context(self) -> contextlib.AbstractContextManager:
        """With the fused kernel, a context in which BLAS runs on the calling thread alone
        (``softmax_kernel.one_blas_thread``) and denormals are flushed to zero
        (``nets.denormals``), entered once per call rather than per step."""
        stack = contextlib.ExitStack()
        if self.pooled is not None and self.pooled.kernel == "numba":
            stack.enter_context(one_blas_thread)
            stack.enter_context(flush_denormals())
        return stack

    def _reserve_powers(self, n: int) -> None:
        """Makes the lazy closed forms cover k = 0..n-1 untouched steps."""
        if self.lazy and self._powers.shape[0] < n:
            # Doubling: few rebuilds if called step by step.
            self._powers = tf.constant(self.rule.powers(max(n, 2 * self._powers.shape[0])))

    def catch_up(self) -> None:
        """Brings every row of every table up to the current step (lazy rule only)."""
        self._catch_up_fn(self._powers)
        self._pending = 0

    def _catch_up_all(self, powers: tf.Tensor) -> None:
        def catch_up() -> None:
            for table, slots, row_step in zip(self.tables, self.table_slots, self.row_step,
                                              strict=True):
                self.rule.catch_up_table(table, slots[0], self.step - row_step, powers)
                row_step.assign(tf.fill(tf.shape(row_step), self.step.read_value()))
        self.strategy.run(catch_up)

    def _share(self, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """This replica's part [lo, hi) of a global batch of n examples."""
        if self.replicas == 1:
            return tf.constant(0), n
        r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
        return n * r // self.replicas, n * (r + 1) // self.replicas

    def _replica_step(self, users, movies, y, negatives, start, powers) -> tf.Tensor:
        """One step on one replica; returns the global batch's summed loss terms."""
        if self.pools is not None:
            return self._softmax_step(users, movies, start, powers)
        net = self.net
        bpr = self.objective == "bpr"
        step = self.step.assign_add(1)
        b = self.batch_size
        batch = [users[start:start + b], movies[start:start + b]]  # per input: ids
        n = tf.size(batch[0])
        if bpr:  # the negatives are scored as more movie rows of the same users
            batch[1] = tf.concat([batch[1], negatives[start:start + b]], 0)
        distinct = [tf.unique(ids) for ids in batch]  # (rows, position of each id)
        lo, hi = self._share(n)

        def share(x):  # this replica's share of an n-long tensor (users, targets)
            return x if self.replicas == 1 else x[lo:hi]

        def mine(x):  # ... of a batch's movie rows (bpr: 2n, the share of both halves)
            if self.replicas == 1 or not bpr:
                return share(x)
            return tf.concat([x[lo:hi], x[n + lo:n + hi]], 0)
        positions = [share(distinct[0][1]), mine(distinct[1][1])]
        ids = [share(batch[0]), mine(batch[1])]
        if bpr:  # every user row is read twice, for the positive and the negative
            positions[0] = tf.concat([positions[0], positions[0]], 0)
            ids[0] = tf.concat([ids[0], ids[0]], 0)
        caught = self._catch_up_rows(step, [rows for rows, _ in distinct], powers)
        # Each input's rows for this replica's examples.
        joined = [tf.gather(table, i) for table, i in zip(self.tables, ids, strict=True)]
        keep = None
        if net.dropout and self.hidden_units:  # the global batch's mask, then this share
            keep = mine(dropout_keep(self.seed, step, 0, [tf.size(batch[1]), self.hidden_units],
                                     net.dropout))
        targets = y if bpr else share(y[start:start + b])
        scale = tf.cast(n, tf.float32)
        terms, row_grads, dense_grads = net.loss_and_grads(
            self.objective, self._table_columns(joined), self.dense, targets, scale, keep)
        grads = self._row_gradients(joined, row_grads, positions, distinct, scale, hi - lo)
        total = tf.reduce_sum(terms)
        if self.replicas > 1:
            grads, dense_grads, total = self._all_reduce(grads, dense_grads, total)
            grads = [g[:tf.size(d[0])] for g, d in zip(grads, distinct, strict=True)]
        self._apply(step, [d[0] for d in distinct], grads, dense_grads, caught)
        return total

    def _catch_up_rows(self, step, rows: list[tf.Tensor], powers) -> list[tuple]:
        """lazy: brings each input's distinct ``rows`` up to the end of the previous step and
        returns (weights, momentum) of those rows per input; otherwise (None, None) each."""
        if not self.lazy:
            return [(None, None)] * len(self.tables)
        return [self.rule.catch_up_rows(table, slots[0], r,
                                        step - 1 - tf.gather(row_step, r), powers)
                for table, slots, row_step, r in
                zip(self.tables, self.table_slots, self.row_step, rows, strict=True)]

    def _table_columns(self, joined: list[tf.Tensor]) -> list[tf.Tensor]:
        """Each input's gathered rows split back into the Keras tables' columns (the order of
        ``spec.tables``, which the hand-written pass takes)."""
        rows = [None] * len(self.split.tables)
        for f, value in enumerate(joined):
            widths = [w for _, w in self.columns[f]]
            parts = tf.split(value, widths, 1) if len(widths) > 1 else [value]
            for (i, _), part in zip(self.columns[f], parts, strict=True):
                rows[i] = part
        return rows

    def _row_gradients(self, joined, row_grads, positions, distinct, scale,
                       n_mine) -> list[tf.Tensor]:
        """Per input, the gradients of the batch's distinct rows: the examples' row gradients
        side by side in the input's joined table, plus the per-rating L2 term, summed per
        distinct row. ``n_mine``: this replica's number of examples."""
        rule, bpr, b = self.rule, self.objective == "bpr", self.batch_size
        grads = []
        for f, value in enumerate(joined):
            parts = [row_grads[i] for i, _ in self.columns[f]]
            g = tf.concat(parts, 1) if len(parts) > 1 else parts[0]
            if rule.per_rating_l2:  # each example's own rows (bpr: u, i and j; u once)
                own = value
                if bpr and f == 0:
                    own = value * tf.concat([tf.ones([n_mine, 1]), tf.zeros([n_mine, 1])], 0)
                g += (2.0 * rule.per_rating_l2 / scale) * own
            # Across replicas, a fixed number of rows (the most a batch can touch): every
            # all-reduce of a run then has one shape, as TensorFlow's collectives require.
            segments = (tf.size(distinct[f][0]) if self.replicas == 1
                        else (2 if bpr and f == 1 else 1) * b)
            grads.append(tf.math.unsorted_segment_sum(g, positions[f], segments))
        return grads

    @staticmethod
    def _all_reduce(table_grads, dense_grads, total):
        """Sums every gradient and the loss over the replicas in one all-reduce."""
        parts = [*table_grads, *dense_grads, total]
        flat = tf.concat([tf.reshape(p, [-1]) for p in parts], 0)
        flat = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, flat)
        pieces = tf.split(flat, [tf.size(p) for p in parts])
        out = [tf.reshape(piece, tf.shape(p)) for piece, p in zip(pieces, parts, strict=True)]
        n = len(table_grads)
        return out[:n], out[n:-1], out[-1]

    def _apply(self, step, distinct, table_grads, dense_grads, caught) -> None:
        """The same update on every replica's own copy, from the summed gradients."""
        rule = self.rule
        alpha = rule.adam_alpha(step) if rule.adam else None
        decay = 2.0 * rule.whole_table_l2  # d/dw of l2 * w^2
        for table, slots, rows, g, (w, momentum) in zip(
                self.tables, self.table_slots, distinct, table_grads, caught, strict=True):
            if rule.table_updates == "dense":
                g = tf.scatter_nd(rows[:, None], g, tf.shape(table, out_type=tf.int32))
                rule.dense_update(table, slots, g + decay * table if decay else g, alpha)
                continue
            if w is not None:  # lazy with a whole-table penalty: its gradient at the row
                g += decay * w
            rule.row_update(table, slots, rows, g, momentum, alpha)
        for row_step, rows in zip(self.row_step, distinct, strict=False):
            row_step.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        for var, slots, g, kernel in zip(self.dense, self.dense_slots, dense_grads,
                                         self.split.is_kernel, strict=True):
            if kernel and rule.l2_dense:
                g += 2.0 * rule.l2_dense * var
            rule.dense_update(var, slots, g, alpha)

    def _run_steps(self, users, movies, y, negatives, first_step, n_steps, powers):
        total = tf.constant(0.0)
        for i in tf.range(n_steps):
            # One step at a time: overlapping iterations would pair one replica's all-reduce
            # with another replica's from the next step.
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            start = (first_step + i) * self.batch_size
            out = self.strategy.run(self._replica_step,
                                    args=(users, movies, y, negatives, start, powers))
            total += self.strategy.experimental_local_results(out)[0]
        return total

    def _predict_batch(self, users, movies):
        return self.split.forward([users, movies], training=False)

    def predict(self, users: tf.Tensor, movies: tf.Tensor) -> np.ndarray:
        """Centred predictions of the Keras model for all rows, in batches of
        PREDICT_BATCH_SIZE."""
        n = int(users.shape[0])
        parts = [self.predict_batch(users[s:s + PREDICT_BATCH_SIZE],
                                    movies[s:s + PREDICT_BATCH_SIZE]).numpy()
                 for s in range(0, n, PREDICT_BATCH_SIZE)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def penalty(self, users: np.ndarray, movies: np.ndarray) -> float:
        """The L2 terms of the loss at the Keras model's weights, for ratings (users, movies):
        what the loss adds to the MSE (0 without regularisation)."""
        rule, split = self.rule, self.split
        total = 0.0
        if rule.l2_dense:
            total += rule.l2_dense * sum(float(np.sum(np.square(v.numpy(), dtype=np.float64)))
                                         for v, k in zip(split.dense, split.is_kernel,
                                                         strict=True) if k)
        if rule.whole_table_l2:
            total += rule.whole_table_l2 * sum(
                float(np.sum(np.square(t.numpy(), dtype=np.float64))) for t in split.tables)
        if rule.per_rating_l2 and len(users):
            ids = [users, movies]
            total += rule.per_rating_l2 * sum(
                float(np.mean(np.sum(np.square(t.numpy(), dtype=np.float64), axis=1)[ids[f]]))
                for t, f in zip(split.tables, split.feeds, strict=True))
        return total

    def steps_in(self, n_examples: int) -> int:
        """SGD steps in an epoch of ``n_examples`` (the last batch may be smaller)."""
        return -(-n_examples // self.batch_size)

    def epoch(self, users: tf.Tensor, movies: tf.Tensor, y: tf.Tensor,
              steps_per_call: int, negatives: tf.Tensor | None = None,
              on_steps: Callable[[int], None] | None = None) -> float:
        """One pass over (already shuffled) examples; returns the mean of their losses (for
        the rating objective, the mean squared error of its batches).

        That is Keras' training MSE: the batch errors averaged, weighted by batch size, with
        the weights changing along the way. The last batch may be smaller, as in ``model.fit``.
        ``on_steps(count)`` is told after every call into TensorFlow (a progress bar).
        Afterwards every table row is up to date and copied into the Keras model, so the model
        can be scored or saved.

        Raises :class:`NonFiniteLoss` after the first call whose summed loss is NaN or infinite
        (checking one number per call costs nothing; the exact step within the call is not
        sought), leaving the Keras model's weights as they were before the epoch.
        """
        n = int(users.shape[0])
        if negatives is None:
            negatives = tf.zeros([0], tf.int32)
        n_steps = self.steps_in(n)
        self._reserve_powers(self._pending + n_steps + 1)
        total = 0.0
        for first in range(0, n_steps, steps_per_call):
            count = min(steps_per_call, n_steps - first)
            part = float(self.run_steps(users, movies, y, negatives,
                                        tf.constant(first, tf.int32),
                                        tf.constant(count, tf.int32)))
            if not math.isfinite(part):
                raise NonFiniteLoss(part, first + 1, first + count, n_steps)
            total += part
            if on_steps is not None:
                on_steps(count)
        if self.lazy:
            self.catch_up()
        if self.host is not None:
            self.host.push()
        self.push()
        return total / n
