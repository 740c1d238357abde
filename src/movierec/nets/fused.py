"""The network's forward and backward pass written by hand, for the training step.

At a batch of 128 a step is small arithmetic and large bookkeeping: differentiating the Keras
model's own layers (Flatten, Dot, Add, ...) with a GradientTape records several dozen
TensorFlow ops, and each op costs microseconds of executor overhead whatever its size. Here the
network a ``NetSpec`` describes (residual, mf or deep, with or without dropout) is about 25 ops
for the loss and every gradient, with no tape; tests/nets/test_parity.py checks it against the
tape through the Keras model built from the same spec.

It also takes every weight as an argument: the gathered rows and the dense weights are
whatever the caller passes, so a ``tf.distribute`` replica can run it on the loop's own
variables (or their per-replica values) without going through Keras' variable tracking.

Gradients are those of ``L = sum(terms) / scale``; a row gradient is per example row (one
per gathered row, duplicates not summed), as the gradient of a ``tf.gather`` is.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from movierec.core.config import OBJECTIVES
from movierec.nets.spec import NetSpec


class FusedNet:
    """The hand-written pass of the network ``spec`` describes.

    ``table_roles`` / ``dense_roles``: the weight behind each entry of the ``rows`` and
    ``dense`` arguments and of the returned gradients, in that order (``spec.tables`` and
    ``spec.dense``; ``keras_model.tables_of`` and ``dense_of`` give a Keras model's).
    """

    def __init__(self, spec: NetSpec):
        self.spec = spec
        self.kind = spec.variant
        self.dropout = spec.dropout
        self.table_roles = tuple(t.name for t in spec.tables)
        self.dense_roles = tuple(name for name, _ in spec.dense)
        self._t = {r: i for i, r in enumerate(self.table_roles)}
        self._d = {r: i for i, r in enumerate(self.dense_roles)}

    def forward(self, rows, dense, keep=None):
        """Scores (n,) from gathered rows and dense weights, and what the backward reuses:
        the concatenated embeddings, elu's output and the side branch's input after dropout.
        ``keep``: a scaled dropout mask (n, hidden), or None (inference; mf ignores it)."""
        t, d = self._t, self._d
        u, m = rows[t["user_embedding"]], rows[t["movie_embedding"]]
        parts, x, a, ak = [], None, None, None
        if self.kind != "deep":
            parts += [tf.reduce_sum(u * m, axis=1, keepdims=True),
                      rows[t["user_bias"]], rows[t["movie_bias"]]]
        if self.kind != "mf":
            x = tf.concat([u, m], 1)  # one matmul on the concat beats two on the halves
            # bias_add (not +) lets Grappler fuse MatMul + BiasAdd + Elu into one kernel.
            a = tf.nn.elu(tf.nn.bias_add(tf.matmul(x, dense[d["hidden/kernel"]]),
                                         dense[d["hidden/bias"]]))
            ak = a if keep is None else a * keep
            parts.append(tf.nn.bias_add(tf.matmul(ak, dense[d["side_out/kernel"]]),
                                        dense[d["side_out/bias"]]))
        s = tf.add_n(parts) if len(parts) > 1 else parts[0]  # (n, 1): one AddN, not three Adds
        return tf.reshape(s, [-1]), (x, a, ak)

    def loss_and_grads(self, objective: str, rows: list[tf.Tensor], dense: list[tf.Tensor],
                       targets: tf.Tensor, scale: tf.Tensor, keep: tf.Tensor | None = None
                       ) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
        """(terms, row gradients, dense gradients) of ``L = sum(terms) / scale``. ``terms`` as
        the objective's per-example loss (bpr: positives' scores then negatives', n/2 terms)."""
        # A variable read per use would add ops: read each dense weight once.
        dense = [tf.convert_to_tensor(v) for v in dense]
        s, (x, a, ak) = self.forward(rows, dense, keep)
        if objective == "rating":
            r = s - targets
            terms, ds = tf.square(r), (r + r) / scale
        elif objective == "bce":
            terms = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=s)
            ds = (tf.sigmoid(s) - targets) / scale
        elif objective == "bpr":
            pos, neg = tf.split(s, 2)
            diff = neg - pos
            terms, g = tf.math.softplus(diff), tf.sigmoid(diff) / scale
            ds = tf.concat([-g, g], 0)
        else:
            raise ValueError(f"FusedNet.loss_and_grads: received objective={objective!r} "
                             f"(expected one of {', '.join(OBJECTIVES)})")
        ds = tf.expand_dims(ds, 1)  # (n, 1): broadcasts over rows, and is the bias gradient
        t, d = self._t, self._d
        u, m = rows[t["user_embedding"]], rows[t["movie_embedding"]]
        row_grads: list = [None] * len(rows)
        dense_grads: list = [None] * len(dense)
        if self.kind == "mf":
            du, dm = ds * m, ds * u
        else:
            w1, w2 = dense[d["hidden/kernel"]], dense[d["side_out/kernel"]]
            dense_grads[d["side_out/kernel"]] = tf.matmul(ak, ds, transpose_a=True)
            dense_grads[d["side_out/bias"]] = tf.reduce_sum(ds, 0)
            dak = tf.matmul(ds, w2, transpose_b=True)  # (n, 1) x (1, H): no reshape of W2
            da = dak if keep is None else dak * keep
            # elu' from elu's output: 1 where it is > 0, else output + 1 = exp(x).
            dz = tf.raw_ops.EluGrad(gradients=da, outputs=a)
            dense_grads[d["hidden/kernel"]] = tf.matmul(x, dz, transpose_a=True)
            dense_grads[d["hidden/bias"]] = tf.reduce_sum(dz, 0)
            dx = tf.matmul(dz, w1, transpose_b=True)  # (n, 2K): the user and movie halves
            if self.kind == "residual":
                # The dot product's gradient on the concatenated layout: [ds m, ds u] in
                # three ops, then one split, instead of two Muls and two Adds after it.
                dx += ds * tf.concat([m, u], 1)
            du, dm = tf.split(dx, 2, axis=1)
        row_grads[t["user_embedding"]], row_grads[t["movie_embedding"]] = du, dm
        if self.kind != "deep":
            row_grads[t["user_bias"]] = row_grads[t["movie_bias"]] = ds
        return terms, row_grads, dense_grads


def dropout_keep(seed: int, step: tf.Tensor, replica: tf.Tensor, shape,
                 rate: float) -> tf.Tensor:
    """A keep mask, 0 or 1/(1-rate) (float32), that depends only on (seed, step, replica).

    Stateless, so a resumed run draws the masks it would have drawn, and replicas differ.
    Folding step and replica into the seed one at a time (``stateless_fold_in``) keeps
    every (step, replica) pair's stream distinct, unlike arithmetic on the seed.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_keep: received rate={rate!r} (expected [0, 1))")
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64),
                                                   tf.cast(step, tf.int64))
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(replica, tf.int64))
    u = tf.random.stateless_uniform(shape, seed=key)
    return tf.cast(u >= rate, tf.float32) * np.float32(1.0 / (1.0 - rate))
