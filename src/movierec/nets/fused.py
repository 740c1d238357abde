"""The network's forward and backward pass written by hand, for the training step.

``steps.TrainLoop`` used to differentiate the model's own Keras layers with a GradientTape.
At a batch of 128 a step is small arithmetic and large bookkeeping: Keras' layers (Flatten,
Dot, Add, ...) and the tape's recorded gradient functions add up to several dozen TensorFlow
ops, and each op costs ~5-10 us of executor overhead whatever its size. Here the same network
(``model.build_model``: residual, mf or deep, with or without dropout) is about 25 ops for
the loss and every gradient, with no tape.

It also takes every weight as an argument: the gathered rows and the dense weights are
whatever the caller passes, so a ``tf.distribute`` replica can run it on the loop's own
variables (or their per-replica values) without going through Keras' variable tracking.

Gradients are those of ``L = sum(terms) / scale``; a row gradient is per example row (one
per gathered row, duplicates not summed), as the gradient of a ``tf.gather`` is.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from movierec.core.config import OBJECTIVES

_MAIN = {"user_bias", "movie_bias", "dot", "main_sum", "main_flat"}
_SIDE = {"user_flat", "movie_flat", "concat", "hidden", "elu", "side_out"}
_CLASSES = {"user_embedding": keras.layers.Embedding, "movie_embedding": keras.layers.Embedding,
            "user_bias": keras.layers.Embedding, "movie_bias": keras.layers.Embedding,
            "hidden": keras.layers.Dense, "side_out": keras.layers.Dense,
            "elu": keras.layers.Activation, "dot": keras.layers.Dot,
            "concat": keras.layers.Concatenate, "dropout": keras.layers.Dropout}


class FusedNet:
    """The hand-written pass of a model built by ``model.build_model``.

    ``table_roles`` / ``dense_roles``: the layer (and weight) behind each entry of
    ``RowSplitModel(model).tables`` / ``.dense``, in that order, which is the order of the
    ``rows`` and ``dense`` arguments and of the returned gradients.
    """

    def __init__(self, model: keras.Model):
        names = [layer.name for layer in model.layers]
        main, side = "user_bias" in names, "hidden" in names
        kind = {(True, True): "residual", (True, False): "mf", (False, True): "deep"}.get(
            (main, side))
        expected = {"user", "movie", "user_embedding", "movie_embedding"}
        expected |= (_MAIN if main else set()) | (_SIDE if side else set())
        expected |= ({"residual_sum"} if kind == "residual" else set())
        expected |= ({"dropout"} if side and "dropout" in names else set())
        if kind is None or sorted(names) != sorted(expected):
            raise ValueError(f"FusedNet: model {model.name!r} has layers {names} (expected "
                             "one of model.build_model's networks: residual, mf or deep)")
        get = model.get_layer
        for name, cls in _CLASSES.items():
            if name in names and not isinstance(get(name), cls):
                raise ValueError(f"FusedNet: layer {name!r} is a {type(get(name)).__name__} "
                                 f"(expected {cls.__name__})")
        self.kind = kind
        self.dropout = float(get("dropout").rate) if "dropout" in names else 0.0
        # Same rule as RowSplitModel: Embedding layers in model.layers order, then the other
        # trainable variables in model order. The order differs between the model kinds (and
        # with dropout), so it is read here rather than assumed.
        embeddings = [layer for layer in model.layers
                      if isinstance(layer, keras.layers.Embedding)]
        self.table_roles = tuple(layer.name for layer in embeddings)
        role_of = {id(layer.embeddings): layer.name for layer in embeddings}
        for name in ("hidden", "side_out") if side else ():
            role_of[id(get(name).kernel)] = f"{name}/kernel"
            role_of[id(get(name).bias)] = f"{name}/bias"
        self.dense_roles = tuple(role_of.get(id(v), v.path) for v in model.trainable_variables
                                 if id(v) not in {id(e.embeddings) for e in embeddings})
        self._check(model, names)
        self._t = {r: i for i, r in enumerate(self.table_roles)}
        self._d = {r: i for i, r in enumerate(self.dense_roles)}

    def _check(self, model: keras.Model, names: list[str]) -> None:
        """What the hand-written math assumes beyond layer names."""
        get, problems = model.get_layer, []
        dims = {n: get(n).output_dim for n in self.table_roles}
        if dims["user_embedding"] != dims["movie_embedding"] or any(
                dims[n] != 1 for n in ("user_bias", "movie_bias") if n in dims):
            problems.append(f"embedding widths {dims}")
        for name in dims:  # user_* tables read input 0, movie_* input 1 (RowSplitModel.feeds)
            if get(name).input is not model.inputs[0 if name.startswith("user") else 1]:
                problems.append(f"{name} does not read input {name.split('_')[0]!r}")
        if "hidden" in names:
            for name in ("hidden", "side_out"):
                dense = get(name)
                if dense.activation is not keras.activations.linear or not dense.use_bias:
                    problems.append(f"{name} is not linear with a bias")
            if get("side_out").units != 1 or get("elu").activation is not keras.activations.elu:
                problems.append("side_out units != 1 or elu is not elu")
            # Identity, not ==: == on Keras tensors builds a symbolic op.
            joined = get("concat").input
            if any(joined[i] is not get(f"{who}_flat").output
                   or get(f"{who}_flat").input is not get(f"{who}_embedding").output
                   for i, who in enumerate(("user", "movie"))):
                problems.append("concat is not [user, movie]")
        if "dot" in names and get("dot").normalize:
            problems.append("dot is normalised")
        expected_dense = ["hidden/kernel", "hidden/bias", "side_out/kernel", "side_out/bias"]
        if sorted(self.dense_roles) != sorted(expected_dense if "hidden" in names else []):
            problems.append(f"dense weights {self.dense_roles}")
        if problems:
            raise ValueError(f"FusedNet: model {model.name!r} is not as model.build_model "
                             f"makes it: {'; '.join(problems)}")

    def _forward(self, rows, dense, keep):
        """Scores (n,) and what the backward reuses: the concatenated embeddings, elu's output
        and the side branch's input after dropout."""
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

    def scores(self, rows: list[tf.Tensor], dense: list[tf.Tensor],
               keep: tf.Tensor | None = None) -> tf.Tensor:
        """(n,) outputs from gathered rows and dense weights (RowSplitModel's orders).
        ``keep``: a scaled dropout mask (n, hidden), or None for inference; mf ignores it."""
        return self._forward(rows, [tf.convert_to_tensor(v) for v in dense], keep)[0]

    def loss_and_grads(self, objective: str, rows: list[tf.Tensor], dense: list[tf.Tensor],
                       targets: tf.Tensor, scale: tf.Tensor, keep: tf.Tensor | None = None
                       ) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
        """(terms, row gradients, dense gradients) of ``L = sum(terms) / scale``. ``terms`` as
        the objective's per-example loss (bpr: positives' scores then negatives', n/2 terms)."""
        # A variable read per use would add ops: read each dense weight once.
        dense = [tf.convert_to_tensor(v) for v in dense]
        s, (x, a, ak) = self._forward(rows, dense, keep)
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
