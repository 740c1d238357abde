"""The hand-written forward and backward pass (fused.FusedNet) against a GradientTape through
the Keras model's own layers, for every model kind and objective; the dropout masks."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import reference

from movierec.nets.fused import FusedNet, dropout_keep
from movierec.nets.keras_model import build_model, with_offset
from movierec.train.steps import RowSplitModel

N_USERS, N_MOVIES, K, H = 50, 40, 6, 16
B = 24  # examples per batch (bpr: triples, so 2B scores)
KINDS = ("residual", "mf", "deep")
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _model(kind: str, dropout: float = 0.0, seed: int = 0) -> keras.Model:
    """A model with every weight random: zero biases (Keras' init) would hide bugs."""
    model = build_model(kind, N_USERS, N_MOVIES, K, H, dropout)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    return model


def _batch(objective: str, seed: int = 1):
    """(ids per input, targets): users from a few ids so that they repeat; for bpr the users
    twice, positives' movies then negatives'."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 8, B).astype(np.int32)
    movies = rng.integers(0, N_MOVIES, B).astype(np.int32)
    if objective == "bpr":
        negatives = rng.integers(0, N_MOVIES, B).astype(np.int32)
        ids = [np.concatenate([users, users]), np.concatenate([movies, negatives])]
        targets = np.zeros(0, np.float32)
    elif objective == "bce":
        ids, targets = [users, movies], rng.integers(0, 2, B).astype(np.float32)
    else:
        ids, targets = [users, movies], rng.normal(0.0, 1.0, B).astype(np.float32)
    return [tf.constant(i) for i in ids], tf.constant(targets)


def _tape(split: RowSplitModel, rows, objective, targets, scale, scores_fn):
    with tf.GradientTape() as tape:
        tape.watch(rows + split.dense)
        terms = reference.loss_terms(objective, scores_fn(rows), targets)
        loss = tf.reduce_sum(terms) / scale
    grads = tape.gradient(loss, rows + split.dense)
    return terms, grads[:len(rows)], grads[len(rows):]


def _assert_same(got, expected, rows, dense):
    terms, row_grads, dense_grads = got
    np.testing.assert_allclose(terms.numpy(), expected[0].numpy(), **TOL)
    assert len(row_grads) == len(rows) and len(dense_grads) == len(dense)
    for g, e, r in zip(row_grads, expected[1], rows, strict=True):
        assert g.shape == r.shape  # one gradient row per example row, duplicates not summed
        np.testing.assert_allclose(g.numpy(), e.numpy(), **TOL)
    for g, e, v in zip(dense_grads, expected[2], dense, strict=True):
        assert g.shape == v.shape
        np.testing.assert_allclose(g.numpy(), tf.convert_to_tensor(e).numpy(), **TOL)


@pytest.mark.parametrize("objective", ["rating", "bce", "bpr"])
@pytest.mark.parametrize("kind", KINDS)
def test_loss_and_grads_match_keras_tape(kind, objective):
    model = _model(kind)
    split, net = RowSplitModel(model), FusedNet(model)
    ids, targets = _batch(objective)
    rows = split.lookup(ids)
    scale = tf.constant(37.0)
    expected = _tape(split, rows, objective, targets, scale,
                     lambda r: split.head(r, training=False))
    assert expected[0].shape[0] == B
    _assert_same(net.loss_and_grads(objective, rows, split.dense, targets, scale), expected,
                 rows, split.dense)
    # Compiled too: Grappler's fusions (MatMul + BiasAdd + Elu) only happen in a graph.
    compiled = tf.function(lambda r: net.loss_and_grads(objective, r, split.dense, targets,
                                                        scale))
    _assert_same(compiled(rows), expected, rows, split.dense)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_match_model(kind):
    model = _model(kind)
    split, net = RowSplitModel(model), FusedNet(model)
    ids, _ = _batch("rating")
    predicted = model.predict([i[:, None] for i in ids], verbose=0).reshape(-1)
    got = net.scores(split.lookup(ids), split.dense)
    assert got.shape == (B,)
    np.testing.assert_allclose(got.numpy(), predicted, **TOL)
    np.testing.assert_allclose(got.numpy(), split.forward(ids, training=False).numpy(), **TOL)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("kind", KINDS)
def test_roles_follow_row_split_model_order(kind, dropout):
    model = build_model(kind, N_USERS, N_MOVIES, K, H, dropout)
    split, net = RowSplitModel(model), FusedNet(model)
    assert net.kind == kind
    assert net.dropout == (dropout if kind != "mf" else 0.0)
    assert list(net.table_roles) == [t.name.split("/")[0] for t in split.tables]
    assert list(net.dense_roles) == [v.name.split(":")[0] for v in split.dense]


@pytest.mark.parametrize("objective", ["rating", "bce", "bpr"])
def test_dropout_matches_keras_layers_with_the_same_mask(objective):
    model = _model("residual", dropout=0.3)
    split, net = RowSplitModel(model), FusedNet(model)
    assert net.dropout == pytest.approx(0.3)
    ids, targets = _batch(objective)
    rows = split.lookup(ids)
    keep = dropout_keep(5, tf.constant(3, tf.int64), tf.constant(0), [rows[0].shape[0], H], 0.3)
    assert 0 < float(tf.reduce_mean(tf.cast(keep > 0, tf.float32))) < 1
    layer = model.get_layer
    roles = {r: i for i, r in enumerate(net.table_roles)}

    def keras_scores(r):  # the model's layers, with the mask applied after elu by hand
        u, m = r[roles["user_embedding"]], r[roles["movie_embedding"]]
        bu, bm = r[roles["user_bias"]], r[roles["movie_bias"]]
        main = layer("main_flat")(layer("main_sum")([layer("dot")([u[:, None], m[:, None]]),
                                                     bu[:, None], bm[:, None]]))
        side = layer("side_out")(layer("elu")(layer("hidden")(layer("concat")([u, m]))) * keep)
        return tf.reshape(layer("residual_sum")([main, side]), [-1])

    scale = tf.constant(11.0)
    expected = _tape(split, rows, objective, targets, scale, keras_scores)
    _assert_same(net.loss_and_grads(objective, rows, split.dense, targets, scale, keep),
                 expected, rows, split.dense)
    np.testing.assert_allclose(net.scores(rows, split.dense, keep).numpy(),
                               keras_scores(rows).numpy(), **TOL)
    # Without a mask: inference, the model's own Dropout layer off.
    np.testing.assert_allclose(net.scores(rows, split.dense).numpy(),
                               split.head(rows, training=False).numpy(), **TOL)


def test_dropout_keep_values_fraction_and_seeding():
    step, replica = tf.constant(7, tf.int64), tf.constant(1, tf.int32)
    keep = dropout_keep(42, step, replica, [1000, 400], 0.3).numpy()
    assert keep.dtype == np.float32
    assert set(np.unique(keep)) == {np.float32(0.0), np.float32(1.0 / 0.7)}
    assert np.mean(keep > 0) == pytest.approx(0.7, abs=0.005)
    small = [64, 16]
    again = dropout_keep(42, step, replica, small, 0.3).numpy()
    assert np.array_equal(again, dropout_keep(42, tf.constant(7), 1, small, 0.3).numpy())
    compiled = tf.function(lambda s, r: dropout_keep(42, s, r, small, 0.3))
    assert np.array_equal(again, compiled(step, replica).numpy())
    for other in (dropout_keep(42, step + 1, replica, small, 0.3),
                  dropout_keep(42, step, replica + 1, small, 0.3),
                  dropout_keep(43, step, replica, small, 0.3)):
        assert not np.array_equal(again, other.numpy())
    assert np.all(dropout_keep(42, step, replica, small, 0.0).numpy() == 1.0)
    with pytest.raises(ValueError, match="rate"):
        dropout_keep(42, step, replica, small, 1.0)


@pytest.mark.parametrize("objective", ["bce", "bpr"])
def test_extreme_scores_stay_finite(objective):
    model = _model("residual")
    split, net = RowSplitModel(model), FusedNet(model)
    ids, targets = _batch(objective)
    rows = split.lookup(ids)
    signs = np.where(np.arange(B) % 2 == 0, 1.0, -1.0).astype(np.float32)
    if objective == "bpr":  # a negative's bias opposite its positive's: |diff| ~ 200
        signs = np.concatenate([signs, -signs])
    # |s| ~ 100, sign alternating, whatever the labels.
    rows[net.table_roles.index("movie_bias")] = tf.constant(100.0 * signs[:, None])
    scale = tf.constant(float(B))
    terms, row_grads, dense_grads = net.loss_and_grads(objective, rows, split.dense, targets,
                                                       scale)
    for t in [terms, *row_grads, *dense_grads]:
        assert np.all(np.isfinite(t.numpy()))
    assert float(tf.reduce_max(terms)) > 50.0  # some examples are confidently wrong
    expected = _tape(split, rows, objective, targets, scale,
                     lambda r: split.head(r, training=False))
    _assert_same((terms, row_grads, dense_grads), expected, rows, split.dense)


def test_rejects_other_models():
    wrapped = with_offset(build_model("residual", N_USERS, N_MOVIES, K, H), 3.5)
    with pytest.raises(ValueError, match="add_train_mean"):
        FusedNet(wrapped)
    inputs = keras.Input(shape=(4,), name="x")
    other = keras.Model(inputs, keras.layers.Dense(1, name="hidden")(inputs))
    with pytest.raises(ValueError, match="has layers"):
        FusedNet(other)
    model = _model("mf")
    rows = RowSplitModel(model).lookup(_batch("rating")[0])
    with pytest.raises(ValueError, match="objective"):
        FusedNet(model).loss_and_grads("hinge", rows, [], tf.zeros([B]), tf.constant(1.0))


def test_rejects_a_lookalike_with_another_activation():
    config = build_model("deep", N_USERS, N_MOVIES, K, H).get_config()
    for layer in config["layers"]:
        if layer["name"] == "elu":
            layer["config"]["activation"] = "relu"
    with pytest.raises(ValueError, match="elu is not elu"):
        FusedNet(keras.Model.from_config(config))


def test_runs_in_a_replica_context():
    model = _model("residual", dropout=0.3)
    split, net = RowSplitModel(model), FusedNet(model)
    ids, targets = _batch("rating")
    scale = tf.constant(float(B))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    @tf.function
    def replica_step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        keep = dropout_keep(9, tf.constant(2, tf.int64), replica, [B, H], net.dropout)
        terms, row_grads, dense_grads = net.loss_and_grads("rating", split.lookup(ids),
                                                           split.dense, targets, scale, keep)
        return terms, row_grads, dense_grads

    got = strategy.experimental_local_results(strategy.run(replica_step))[0]
    keep = dropout_keep(9, tf.constant(2, tf.int64), tf.constant(0), [B, H], net.dropout)
    expected = net.loss_and_grads("rating", split.lookup(ids), split.dense, targets, scale, keep)
    for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected), strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), **TOL)
