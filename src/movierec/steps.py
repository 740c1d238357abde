"""The training step: one batch's loss, gradients and weight updates, many steps per call.

The tutorial calls ``model.fit`` on numpy arrays. At MovieLens-20M scale that costs 3.0-3.35 ms
per batch of 128 on this project's 2-core CI machine (shared/docs/anchors.md says 13.7 ms), and
the time goes to two places:

* Keras' SGD updates the *whole* embedding tables on every step, because momentum keeps every
  row moving (138,493 x 10 user weights for 128 ratings), and Keras reads each table whole
  into the graph before gathering rows from it;
* per-step overhead: one call from Python into TensorFlow per batch, and a thread-pool hand-off
  for every tiny op.

This module's loop keeps the model and the loss and removes those costs. The model is split at
its embedding lookups: rows are gathered straight from the tables, the rest of the network is
the model's own Keras layers, and the gradient of each table is the gradient of its gathered
rows. Many steps run inside one compiled ``tf.function`` call.

Three ways to update the embedding tables (``train.table_updates``):

* ``lazy`` (default): the tutorial's rule, Keras' SGD with momentum, computed only where it is
  needed. Under that rule a row the batch does not touch still moves: ``m = momentum * m`` and
  ``w += m`` on every step. Those steps have a closed form: after k untouched steps,
  ``w += m * (momentum + ... + momentum^k)`` and ``m *= momentum^k``, read from a table over k
  (``momentum_powers``, which also covers a whole-table L2 decay). Each input (user, movie)
  keeps the step at which every row was last brought up to date, and a row is caught up just
  before a batch reads it; every row is caught up at the end of each epoch, before the test
  split is scored and the model is saved. Same rule, same result up to float rounding, at the
  cost of the touched rows.
* ``dense``: the same rule computed the tutorial's way, every row of every table on every step
  (the reference the tests compare ``lazy`` against; about 6x slower at MovieLens-20M scale).
* ``sparse``: TensorFlow 1's ``MomentumOptimizer`` rule for sparse gradients, a different rule:
  a row's momentum is kept, decayed and applied only on the steps that touch it, so an untouched
  row does not move.

Beyond the tutorial (``UpdateRule``): L2 penalties on the embedding rows (per rating, or the
whole table on every step, which ``lazy`` applies to untouched rows in closed form too) and on
the Dense kernels, and Adam, computed on every row (``dense``, Keras' Adam) or on the touched
rows only (``sparse``, LazyAdam's rule).

Duplicate ids in a batch are summed first in ``lazy`` and ``sparse``, so each row is updated once
per step and every scatter has distinct indices (deterministic on any device). Dense layers use
Keras' rule in all three. ``python -m movierec.bench speed`` measures them against the tutorial's
``model.fit`` and checks the accuracy of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from movierec import objectives
from movierec.config import OBJECTIVES, OPTIMIZERS, TABLE_UPDATES, TrainParams

# Prediction-only batch size: it changes speed, never the predictions' values beyond float
# rounding, so it is not a params.yaml knob.
PREDICT_BATCH_SIZE = 8192


def _tf_variable(variable: keras.Variable) -> tf.Variable:
    value = variable.value  # the TensorFlow variable behind a float32 Keras variable
    if not isinstance(value, tf.Variable):
        raise TypeError(f"expected a TensorFlow-backed Keras variable, received {type(value)}")
    return value


class RowSplitModel:
    """A Keras model split at its embedding lookups, for training with row updates.

    Every ``Embedding`` layer must read one of the model's inputs directly (true of the
    tutorial's network). ``lookup`` gathers the rows of each table for a batch of ids and
    ``head`` runs the remaining layers, the model's own, on them.
    """

    def __init__(self, model: keras.Model):
        layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
        self.feeds = []
        for layer in layers:
            feed = [i for i, t in enumerate(model.inputs) if t is layer.input]
            if not feed:
                raise ValueError(f"RowSplitModel: embedding {layer.name!r} does not read a model "
                                 "input directly (expected Input -> Embedding)")
            self.feeds.append(feed[0])
        self.tail = keras.Model([layer.output for layer in layers], model.output,
                                name=f"{model.name}_after_lookups")
        self.tables = [_tf_variable(layer.embeddings) for layer in layers]
        table_ids = {id(layer.embeddings) for layer in layers}
        rest = [v for v in model.trainable_variables if id(v) not in table_ids]
        self.dense = [_tf_variable(v) for v in rest]
        # Which of them are Dense kernels, the weights an L2 "kernel regulariser" penalises.
        self.is_kernel = [v.path.endswith("/kernel") for v in rest]

    def lookup(self, ids: list[tf.Tensor]) -> list[tf.Tensor]:
        """Each table's rows (b, K) for a batch of input ids (one (b,) tensor per model input).

        ``tf.gather`` on the variable itself reads only the batch's rows, and its gradient is
        those rows' gradients (``tf.IndexedSlices``); reading a table whole, as Keras'
        ``Embedding`` does, would copy it on every step once rows have been updated in place.
        """
        return [tf.gather(table, ids[f]) for table, f in zip(self.tables, self.feeds,
                                                              strict=True)]

    def head(self, rows: list[tf.Tensor], training: bool) -> tf.Tensor:
        """Predictions (b,) from the gathered rows: the model's layers after the lookups."""
        return tf.reshape(self.tail([r[:, None, :] for r in rows], training=training), [-1])

    def forward(self, ids: list[tf.Tensor], training: bool) -> tf.Tensor:
        """Predictions (b,) for a batch of input ids."""
        return self.head(self.lookup(ids), training)


# Keras' Adam defaults; only the learning rate is a params.yaml knob.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


@dataclass(frozen=True)
class UpdateRule:
    """What one training step does to the weights: optimiser, table rule and L2 penalties.

    ``l2_embeddings`` weighs the squared embedding and bias rows. ``per_rating``: each rating
    of the batch adds its own user's and movie's rows, averaged over the batch like the squared
    errors (the penalty of matrix factorisation, Surprise's SVD), so a row is pulled towards 0
    in proportion to how often it is rated. ``whole_table``: every row of every table, on every
    step (Keras' ``embeddings_regularizer=l2(...)``), so rarely rated rows decay between their
    ratings. ``l2_dense`` adds the squared Dense kernels (Keras' ``kernel_regularizer``).
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.08
    momentum: float = 0.9
    table_updates: str = "lazy"
    l2_embeddings: float = 0.0
    l2_embeddings_form: str = "per_rating"
    l2_dense: float = 0.0

    @classmethod
    def from_params(cls, params: TrainParams) -> UpdateRule:
        return cls(params.optimizer, params.learning_rate, params.momentum,
                   params.table_updates, params.l2_embeddings, params.l2_embeddings_form,
                   params.l2_dense)

    @property
    def whole_table_l2(self) -> float:
        return self.l2_embeddings if self.l2_embeddings_form == "whole_table" else 0.0

    @property
    def per_rating_l2(self) -> float:
        return self.l2_embeddings if self.l2_embeddings_form == "per_rating" else 0.0


def momentum_powers(n: int, learning_rate: float, momentum: float,
                    decay: float) -> np.ndarray:
    """Rows k = 0..n-1: the matrix M^k of k SGD-with-momentum steps on a row whose only
    gradient is the whole-table L2 term ``decay * w`` (``decay`` = 2 * l2).

    One such step is ``m = momentum * m - lr * decay * w; w += m``, linear in (w, m):
    ``M = [[1 - a, momentum], [-a, momentum]]`` with ``a = lr * decay``. Returned as columns
    (M00 - 1, M01, M10, M11), so that ``w += (M00 - 1) * w + M01 * m``; without a penalty
    ``M01 = momentum + ... + momentum^k`` and ``M11 = momentum^k``. Computed in float64.
    """
    a = learning_rate * decay
    step = np.array([[1.0 - a, momentum], [-a, momentum]])
    out = np.empty((n, 4))
    power = np.eye(2)
    for k in range(n):
        out[k] = power[0, 0] - 1.0, power[0, 1], power[1, 0], power[1, 1]
        power = step @ power
    return out


class TrainLoop:
    """The training loop over a :class:`RowSplitModel`, many steps per TensorFlow call."""

    def __init__(self, split: RowSplitModel, batch_size: int, rule: UpdateRule = UpdateRule(),
                 objective: str = "rating"):
        if objective not in OBJECTIVES:
            raise ValueError(f"TrainLoop: received objective={objective!r} "
                             f"(expected one of {', '.join(OBJECTIVES)})")
        if rule.table_updates not in TABLE_UPDATES:
            raise ValueError(f"TrainLoop: received table_updates={rule.table_updates!r} "
                             f"(expected one of {', '.join(TABLE_UPDATES)})")
        if rule.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainLoop: received optimizer={rule.optimizer!r} "
                             f"(expected one of {', '.join(OPTIMIZERS)})")
        if rule.optimizer == "adam" and rule.table_updates == "lazy":
            raise ValueError("TrainLoop: lazy table updates are for sgd (received adam; "
                             "expected dense or sparse)")
        if rule.whole_table_l2 and rule.table_updates == "sparse":
            raise ValueError("TrainLoop: a whole_table L2 penalty needs lazy or dense table "
                             "updates (received sparse)")
        self.split = split
        self.objective = objective
        self.rule = rule
        self.lr, self.mu = rule.learning_rate, rule.momentum
        self.batch_size = batch_size
        self.table_updates = rule.table_updates
        self.adam = rule.optimizer == "adam"
        # Optimiser state per weight: SGD's momentum, or Adam's first and second moments.
        n_slots = 2 if self.adam else 1
        self.table_slots = [[tf.Variable(tf.zeros_like(t), trainable=False)
                             for _ in range(n_slots)] for t in split.tables]
        self.dense_slots = [[tf.Variable(tf.zeros_like(v), trainable=False)
                             for _ in range(n_slots)] for v in split.dense]
        # Steps taken so far, and for ``lazy`` the step each row is up to date with. Tables read
        # by the same input (user embedding and user bias) are touched together, so they share
        # one record per input.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.inputs = sorted(set(split.feeds))
        sizes = {f: t.shape[0] for f, t in zip(split.feeds, split.tables, strict=True)}
        self.lazy = rule.table_updates == "lazy"
        self.row_step = {f: tf.Variable(tf.zeros([sizes[f]], tf.int64), trainable=False)
                         for f in self.inputs} if self.lazy else {}
        # lazy: M^k for k untouched steps (momentum_powers), grown as epochs need.
        self.powers = tf.Variable(tf.zeros([0, 4]), shape=tf.TensorShape([None, 4]),
                                  trainable=False)
        self._n_powers = 0  # rows in self.powers (its static shape is unknown)
        self._pending = 0  # steps since every row was last caught up
        spec = tf.TensorSpec([None], tf.int32)
        self._run_steps_fn = tf.function(self._run_steps, input_signature=[
            spec, spec, tf.TensorSpec([None], tf.float32), spec,
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
        self.predict_batch = tf.function(self._predict_batch, input_signature=[spec, spec])
        self._catch_up_fn = tf.function(self._catch_up_all)

    def state_variables(self) -> list[tf.Variable]:
        """The optimiser's state: with the model's variables, all a resumed run needs."""
        slots = [s for group in self.table_slots + self.dense_slots for s in group]
        return [self.step, *slots, *self.row_step.values()]

    def run_steps(self, users, movies, y, negatives, first_step, n_steps) -> tf.Tensor:
        """Runs batches first_step .. first_step + n_steps - 1; returns the sum of their
        per-example losses (squared errors for the rating objective). ``negatives``: bpr's
        negative movie per triple (empty for the other objectives)."""
        self._pending += int(n_steps)
        self._reserve_powers(self._pending + 1)
        return self._run_steps_fn(users, movies, y, negatives, first_step, n_steps)

    def _reserve_powers(self, n: int) -> None:
        """Makes self.powers cover k = 0..n-1 untouched steps (lazy rule only)."""
        if self.lazy and self._n_powers < n:
            self._n_powers = max(n, 2 * self._n_powers)  # few rebuilds if called step by step
            self.powers.assign(momentum_powers(
                self._n_powers, self.lr, self.mu, 2.0 * self.rule.whole_table_l2
            ).astype(np.float32))

    def catch_up(self) -> None:
        """Brings every row of every table up to the current step (lazy rule only)."""
        self._catch_up_fn()
        self._pending = 0

    def _step(self, users: tf.Tensor, movies: tf.Tensor, y: tf.Tensor,
              negatives: tf.Tensor) -> tf.Tensor:
        split, rule = self.split, self.rule
        step = self.step.assign_add(1)
        n_examples = tf.size(users)
        # bpr scores the positives and the negatives in one pass: the user rows twice.
        ids = ([tf.concat([users, users], 0), tf.concat([movies, negatives], 0)]
               if self.objective == "bpr" else [users, movies])
        # (rows, position of each id); the dense rule needs neither.
        distinct = ({f: tf.unique(ids[f]) for f in self.inputs}
                    if self.table_updates != "dense" else {})
        if self.lazy:
            # Bring the batch's rows up to the end of the previous step before reading them.
            caught = [self._catch_up_rows(table, slots[0], distinct[f][0],
                                          step - 1 - tf.gather(self.row_step[f],
                                                               distinct[f][0]))
                      for table, slots, f in zip(split.tables, self.table_slots, split.feeds,
                                                 strict=True)]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(split.tables + split.dense)
            rows = split.lookup(ids)
            terms = objectives.loss_terms(self.objective, split.head(rows, training=True), y)
            loss = tf.reduce_mean(terms)
            if rule.per_rating_l2:  # each example's own rows (bpr: u, i and j, u once)
                own = [r[:n_examples] if self.objective == "bpr" and f == 0 else r
                       for r, f in zip(rows, split.feeds, strict=True)]
                loss += rule.per_rating_l2 * tf.add_n(
                    [tf.reduce_sum(tf.square(r)) for r in own]) / tf.cast(n_examples, tf.float32)
        grads = tape.gradient(loss, split.tables + split.dense)
        n_tables = len(split.tables)
        decay = 2.0 * rule.whole_table_l2  # d/dw of l2 * w^2
        if self.adam:
            t = tf.cast(step, tf.float32)
            alpha = (self.lr * tf.sqrt(1.0 - tf.pow(ADAM_BETA_2, t))
                     / (1.0 - tf.pow(ADAM_BETA_1, t)))
        for i, (table, slots, g, f) in enumerate(zip(split.tables, self.table_slots,
                                                     grads[:n_tables], split.feeds, strict=True)):
            if self.table_updates == "dense":
                g = tf.convert_to_tensor(g)
                if decay:
                    g += decay * table
                self._dense_update(table, slots, g, alpha if self.adam else None)
                continue
            rows_i, position = distinct[f]
            g = tf.math.unsorted_segment_sum(g.values, position, tf.size(rows_i))
            if self.adam:  # touched rows only: LazyAdam's rule
                m, v = (tf.gather(s, rows_i) for s in slots)
                m += (g - m) * (1.0 - ADAM_BETA_1)
                v += (tf.square(g) - v) * (1.0 - ADAM_BETA_2)
                for s, value in zip(slots, (m, v), strict=True):
                    s.scatter_update(tf.IndexedSlices(value, rows_i))
                table.scatter_sub(tf.IndexedSlices(alpha * m / (tf.sqrt(v) + ADAM_EPSILON),
                                                   rows_i))
                continue
            if self.lazy:
                w, m = caught[i]
                if decay:
                    g += decay * w
            else:
                m = tf.gather(slots[0], rows_i)
            m = m * self.mu - self.lr * g
            slots[0].scatter_update(tf.IndexedSlices(m, rows_i))
            table.scatter_add(tf.IndexedSlices(m, rows_i))
        for f, row_step in self.row_step.items():
            rows_f = distinct[f][0]
            row_step.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows_f), step), rows_f))
        for var, slots, g, kernel in zip(split.dense, self.dense_slots, grads[n_tables:],
                                         split.is_kernel, strict=True):
            if kernel and rule.l2_dense:
                g += 2.0 * rule.l2_dense * var
            self._dense_update(var, slots, g, alpha if self.adam else None)
        return tf.reduce_sum(terms)

    def _dense_update(self, var: tf.Variable, slots: list[tf.Variable], g: tf.Tensor,
                      alpha: tf.Tensor | None) -> None:
        if alpha is None:  # Keras' SGD: m = momentum * m - lr * g; w += m.
            slots[0].assign(slots[0] * self.mu - self.lr * g)
            var.assign_add(slots[0])
            return
        # Keras' Adam, with alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t).
        m, v = slots
        m.assign_add((g - m) * (1.0 - ADAM_BETA_1))
        v.assign_add((tf.square(g) - v) * (1.0 - ADAM_BETA_2))
        var.assign_sub(alpha * m / (tf.sqrt(v) + ADAM_EPSILON))

    def _catch_up_rows(self, table: tf.Variable, slot: tf.Variable, rows: tf.Tensor,
                       k: tf.Tensor) -> tuple[tf.Tensor | None, tf.Tensor]:
        """Applies k momentum-only steps to ``rows`` (k per row); returns their caught-up
        weights (only with a whole-table penalty, whose gradient needs them) and momentum.
        The caller updates the momentum and the rows' step."""
        p = tf.gather(self.powers, k)
        m = tf.gather(slot, rows)
        if not self.rule.whole_table_l2:  # M00 = 1, M10 = 0: w += M01 * m
            table.scatter_add(tf.IndexedSlices(p[:, 1:2] * m, rows))
            return None, p[:, 3:4] * m
        w = tf.gather(table, rows)
        delta = p[:, 0:1] * w + p[:, 1:2] * m
        table.scatter_add(tf.IndexedSlices(delta, rows))
        return w + delta, p[:, 2:3] * w + p[:, 3:4] * m

    def _catch_up_all(self) -> None:
        for table, slots, f in zip(self.split.tables, self.table_slots, self.split.feeds,
                                   strict=True):
            p = tf.gather(self.powers, self.step - self.row_step[f])
            w, m = table.read_value(), slots[0].read_value()
            table.assign_add(p[:, 0:1] * w + p[:, 1:2] * m)
            slots[0].assign(p[:, 2:3] * w + p[:, 3:4] * m)
        for row_step in self.row_step.values():
            row_step.assign(tf.fill(tf.shape(row_step), self.step.read_value()))

    def _run_steps(self, users, movies, y, negatives, first_step, n_steps):
        total = tf.constant(0.0)
        b = self.batch_size
        for i in tf.range(n_steps):
            start = (first_step + i) * b
            # Traced once per objective: only bpr slices negatives, and bpr has no targets.
            bpr = self.objective == "bpr"
            total += self._step(users[start:start + b], movies[start:start + b],
                                y if bpr else y[start:start + b],
                                negatives[start:start + b] if bpr else negatives)
        return total

    def _predict_batch(self, users, movies):
        return self.split.forward([users, movies], training=False)

    def predict(self, users: tf.Tensor, movies: tf.Tensor) -> np.ndarray:
        """Centred predictions for all rows, in batches of PREDICT_BATCH_SIZE."""
        n = int(users.shape[0])
        parts = [self.predict_batch(users[s:s + PREDICT_BATCH_SIZE],
                                    movies[s:s + PREDICT_BATCH_SIZE]).numpy()
                 for s in range(0, n, PREDICT_BATCH_SIZE)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def penalty(self, users: np.ndarray, movies: np.ndarray) -> float:
        """The L2 terms of the loss at the current weights, for ratings (users, movies): what
        the loss adds to the MSE (0 without regularisation)."""
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

    def epoch(self, users: tf.Tensor, movies: tf.Tensor, y: tf.Tensor,
              steps_per_call: int, negatives: tf.Tensor | None = None) -> float:
        """One pass over (already shuffled) examples; returns the mean of their losses (for
        the rating objective, the mean squared error of its batches).

        That is Keras' training MSE: the batch errors averaged, weighted by batch size, with
        the weights changing along the way. The last batch may be smaller, as in ``model.fit``.
        Afterwards every table row is up to date, so the model can be scored or saved.
        """
        n = int(users.shape[0])
        if negatives is None:
            negatives = tf.zeros([0], tf.int32)
        n_steps = -(-n // self.batch_size)
        self._reserve_powers(self._pending + n_steps + 1)
        total = 0.0
        for first in range(0, n_steps, steps_per_call):
            count = min(steps_per_call, n_steps - first)
            total += float(self.run_steps(users, movies, y, negatives,
                                          tf.constant(first, tf.int32),
                                          tf.constant(count, tf.int32)))
        if self.lazy:
            self.catch_up()
        return total / n
