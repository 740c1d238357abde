"""The update rules: what one step does to a weight given its gradient (``train.optimizer``,
``train.table_updates`` and the L2 penalties).

Three ways to update the embedding tables (``train.table_updates``):

* ``lazy`` (default): the tutorial's rule, Keras' SGD with momentum, computed only where it is
  needed. Under that rule a row the batch does not touch still moves: ``m = momentum * m`` and
  ``w += m`` on every step. Those steps have a closed form: after k untouched steps,
  ``w += m * (momentum + ... + momentum^k)`` and ``m *= momentum^k``, read from a table over k
  (:func:`momentum_powers`, which also covers a whole-table L2 decay). Each input (user, movie)
  keeps the step at which every row was last brought up to date, and a row is caught up just
  before a batch reads it; every row is caught up at the end of each epoch, before the test
  split is scored and the model is saved. Same rule, same result up to float rounding, at the
  cost of the touched rows.
* ``dense``: the same rule computed the tutorial's way, every row of every table on every step
  (the reference the tests compare ``lazy`` against; its cost per step grows with the tables,
  not with the batch, so it is slow at MovieLens-20M scale: docs/benchmarks.md).
* ``sparse``: TensorFlow 1's ``MomentumOptimizer`` rule for sparse gradients, a different rule:
  a row's momentum is kept, decayed and applied only on the steps that touch it, so an untouched
  row does not move.

Beyond the tutorial: L2 penalties on the embedding rows (per rating, or the whole table on every
step, which ``lazy`` applies to untouched rows in closed form too) and on the Dense kernels, and
Adam, computed on every row (``dense``, Keras' Adam) or on the touched rows only (``sparse``,
LazyAdam's rule). Dense layers follow Keras' rule under every table rule.

Every function here updates the variables it is handed, on the device and replica it runs on:
under ``tf.distribute`` each replica calls it on its own copy with the same summed gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from movierec.core.config import TrainParams

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

    @property
    def adam(self) -> bool:
        return self.optimizer == "adam"

    @property
    def n_slots(self) -> int:
        """Optimiser state per weight: SGD's momentum, or Adam's two moments."""
        return 2 if self.adam else 1

    def adam_alpha(self, step: tf.Tensor) -> tf.Tensor:
        """Keras' Adam step size at ``step`` (1-based): lr sqrt(1 - b2^t) / (1 - b1^t)."""
        t = tf.cast(step, tf.float32)
        return (self.learning_rate * tf.sqrt(1.0 - tf.pow(ADAM_BETA_2, t))
                / (1.0 - tf.pow(ADAM_BETA_1, t)))

    def dense_update(self, var: tf.Variable, slots: list[tf.Variable], g: tf.Tensor,
                     alpha: tf.Tensor | None) -> None:
        """Keras' rule on a whole weight (every row): SGD with momentum, or Adam."""
        if alpha is None:  # Keras' SGD: m = momentum * m - lr * g; w += m, as one fused op
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=var.handle, accum=slots[0].handle, lr=self.learning_rate, grad=g,
                momentum=self.momentum)
            return
        # Keras' Adam as one fused op: with beta powers 0 its step size is lr = alpha itself
        # (m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= alpha m / (sqrt(v) + eps)).
        m, v = slots
        zero = tf.constant(0.0)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=zero, beta2_power=zero,
            lr=alpha, beta1=tf.constant(ADAM_BETA_1), beta2=tf.constant(ADAM_BETA_2),
            epsilon=tf.constant(ADAM_EPSILON), grad=g)

    def row_update(self, table: tf.Variable, slots: list[tf.Variable], rows: tf.Tensor,
                   g: tf.Tensor, momentum: tf.Tensor | None, alpha: tf.Tensor | None) -> None:
        """The touched rows' update (``lazy`` and ``sparse``); ``rows`` distinct, ``g`` their
        summed gradients. ``momentum``: ``lazy``'s caught-up momentum of those rows (None
        for ``sparse``, whose momentum is the stored one)."""
        if alpha is not None:  # touched rows only: LazyAdam's rule
            m, v = (tf.gather(s, rows) for s in slots)
            m += (g - m) * (1.0 - ADAM_BETA_1)
            v += (tf.square(g) - v) * (1.0 - ADAM_BETA_2)
            for s, value in zip(slots, (m, v), strict=True):
                s.scatter_update(tf.IndexedSlices(value, rows))
            # gather, subtract, scatter_update: TensorFlow's CPU scatter_sub runs one Eigen
            # expression per row, several times slower than the copy scatter_update makes
            table.scatter_update(tf.IndexedSlices(
                tf.gather(table, rows) - alpha * m / (tf.sqrt(v) + ADAM_EPSILON), rows))
            return
        if momentum is not None:  # lazy: the momentum caught up to the previous step
            slots[0].scatter_update(tf.IndexedSlices(momentum, rows))
        # m[rows] = momentum * m[rows] - lr * g; w[rows] += m[rows], as one fused op
        tf.raw_ops.ResourceSparseApplyKerasMomentum(
            var=table.handle, accum=slots[0].handle, lr=self.learning_rate, grad=g,
            indices=rows, momentum=self.momentum)

    def catch_up_rows(self, table: tf.Variable, slot: tf.Variable, rows: tf.Tensor,
                      k: tf.Tensor, powers: tf.Tensor) -> tuple[tf.Tensor | None, tf.Tensor]:
        """``lazy``: applies k momentum-only steps to ``rows`` (k per row); returns their
        caught-up weights (only with a whole-table penalty, whose gradient needs them) and
        momentum. The caller updates the momentum and the rows' step."""
        p = tf.gather(powers, k)
        m = tf.gather(slot, rows)
        if not self.whole_table_l2:  # M00 = 1, M10 = 0: w += M01 * m
            table.scatter_add(tf.IndexedSlices(p[:, 1:2] * m, rows))
            return None, p[:, 3:4] * m
        w = tf.gather(table, rows)
        delta = p[:, 0:1] * w + p[:, 1:2] * m
        table.scatter_add(tf.IndexedSlices(delta, rows))
        return w + delta, p[:, 2:3] * w + p[:, 3:4] * m

    @staticmethod
    def catch_up_table(table: tf.Variable, slot: tf.Variable, k: tf.Tensor,
                       powers: tf.Tensor) -> None:
        """``lazy``: brings every row of a table up to date, row i after k[i] steps."""
        p = tf.gather(powers, k)
        w, m = table.read_value(), slot.read_value()
        table.assign_add(p[:, 0:1] * w + p[:, 1:2] * m)
        slot.assign(p[:, 2:3] * w + p[:, 3:4] * m)

    def powers(self, n: int) -> np.ndarray:
        """``lazy``'s closed forms for k = 0..n-1 untouched steps (:func:`momentum_powers`)."""
        return momentum_powers(n, self.learning_rate, self.momentum,
                               2.0 * self.whole_table_l2).astype(np.float32)


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
