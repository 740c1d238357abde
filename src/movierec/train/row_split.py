"""The Keras model split at its embedding lookups: the training loop gathers the tables' rows
itself and runs the rest of the model, or its own pass, on them."""

from __future__ import annotations

import keras
import tensorflow as tf

from movierec.nets.keras_model import dense_of, tables_of
from movierec.nets.spec import USER, NetSpec


def _tf_variable(variable: keras.Variable) -> tf.Variable:
    value = variable.value  # the TensorFlow variable behind a float32 Keras variable
    if not isinstance(value, tf.Variable):
        raise TypeError(f"expected a TensorFlow-backed Keras variable, received {type(value)}")
    return value


class RowSplitModel:
    """A Keras model built from ``spec`` (``keras_model.build_model``), split at its
    embedding lookups: ``lookup`` gathers the rows of each of ``spec.tables`` for a batch of
    ids and ``head`` runs the model's own remaining layers on them."""

    def __init__(self, model: keras.Model, spec: NetSpec):
        self.model, self.spec = model, spec
        layers = [model.get_layer(t.name) for t in spec.tables]
        self.feeds = [0 if t.reads == USER else 1 for t in spec.tables]  # the model's inputs
        self.tail = keras.Model([layer.output for layer in layers], model.output,
                                name=f"{model.name}_after_lookups")
        self.tables = [_tf_variable(v) for v in tables_of(model, spec)]
        self.dense = [_tf_variable(v) for v in dense_of(model, spec)]
        # Which of them are Dense kernels, the weights an L2 "kernel regulariser" penalises.
        self.is_kernel = [name.endswith("/kernel") for name, _ in spec.dense]

    def lookup(self, ids: list[tf.Tensor]) -> list[tf.Tensor]:
        """Each table's rows (b, K) for a batch of input ids (one (b,) tensor per model input).

        ``tf.gather`` on the variable itself reads only the batch's rows; reading a table
        whole, as Keras' ``Embedding`` does, would copy it once rows have been updated in place.
        """
        return [tf.gather(table, ids[f]) for table, f in zip(self.tables, self.feeds,
                                                              strict=True)]

    def head(self, rows: list[tf.Tensor], training: bool) -> tf.Tensor:
        """Predictions (b,) from the gathered rows: the model's layers after the lookups."""
        return tf.reshape(self.tail([r[:, None, :] for r in rows], training=training), [-1])

    def forward(self, ids: list[tf.Tensor], training: bool) -> tf.Tensor:
        """Predictions (b,) for a batch of input ids."""
        return self.head(self.lookup(ids), training)
