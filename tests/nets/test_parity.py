"""The three implementations of the network built from one spec agree: the Keras model, the
hand-written forward and backward pass (``fused.FusedNet``, against a GradientTape through the
Keras model's own layers) and the fast scorer (``scoring``, on every (user, movie) pair), for
every variant and objective; and the dropout masks."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import reference
from support.nets import KINDS, OBJECTIVES, random_model, saved_form, scorer, spec_of

from movierec.nets import scoring
from movierec.nets.fused import FusedNet, dropout_keep
from movierec.nets.keras_model import build_model, dense_of, tables_of
from movierec.train.row_split import RowSplitModel

N_USERS, N_MOVIES, K, H = 50, 40, 6, 16
B = 24  # examples per batch (bpr: triples, so 2B scores)
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _net(kind: str, dropout: float = 0.0, seed: int = 0, objective: str = "rating"):
    """(Keras model with random weights, its RowSplitModel, its FusedNet), one spec."""
    spec = spec_of(kind, N_USERS, N_MOVIES, K, H, dropout, objective)
    model = random_model(spec, seed)
    return model, RowSplitModel(model, spec), FusedNet(spec)


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
    _, split, net = _net(kind, objective=objective)
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
def test_forward_matches_model(kind):
    model, split, net = _net(kind)
    ids, _ = _batch("rating")
    predicted = model.predict([i[:, None] for i in ids], verbose=0).reshape(-1)
    got = net.forward(split.lookup(ids), split.dense)[0]
    assert got.shape == (B,)
    np.testing.assert_allclose(got.numpy(), predicted, **TOL)
    np.testing.assert_allclose(got.numpy(), split.forward(ids, training=False).numpy(), **TOL)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("kind", KINDS)
def test_every_weight_of_the_keras_model_is_one_the_spec_names(kind, dropout):
    """A layer added to the Keras builder but not to the spec (or the other way round) fails
    here: the implementations are built from the spec's list of weights."""
    spec = spec_of(kind, N_USERS, N_MOVIES, K, H, dropout)
    model = build_model(spec)
    named = tables_of(model, spec) + dense_of(model, spec)
    assert sorted(id(v) for v in named) == sorted(id(v) for v in model.trainable_variables)
    assert [tuple(v.shape) for v in tables_of(model, spec)] == [
        ({"user": N_USERS, "movie": N_MOVIES}[t.reads], t.width) for t in spec.tables]
    assert [tuple(v.shape) for v in dense_of(model, spec)] == [s for _, s in spec.dense]
    assert ("dropout" in {layer.name for layer in model.layers}) == (
        dropout > 0 and spec.has_side)
    net = FusedNet(spec)
    assert net.table_roles == tuple(t.name for t in spec.tables)
    assert net.dense_roles == tuple(name for name, _ in spec.dense)


@pytest.mark.parametrize("objective", ["rating", "bce", "bpr"])
def test_dropout_matches_keras_layers_with_the_same_mask(objective):
    model, split, net = _net("residual", dropout=0.3, objective=objective)
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
    np.testing.assert_allclose(net.forward(rows, split.dense, keep)[0].numpy(),
                               keras_scores(rows).numpy(), **TOL)
    # Without a mask: inference, the model's own Dropout layer off.
    np.testing.assert_allclose(net.forward(rows, split.dense)[0].numpy(),
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
    _, split, net = _net("residual", objective=objective)
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


def test_runs_in_a_replica_context():
    _, split, net = _net("residual", dropout=0.3)
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


# The scorer against the saved Keras model, on every (user, movie) pair.
S_USERS, S_MOVIES = 41, 67


def _keras_scores(model: keras.Model) -> np.ndarray:
    users = np.repeat(np.arange(S_USERS), S_MOVIES).reshape(-1, 1)
    movies = np.tile(np.arange(S_MOVIES), S_USERS).reshape(-1, 1)
    out = model.predict([users, movies], batch_size=8192, verbose=0)
    return np.asarray(out).reshape(S_USERS, S_MOVIES)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("kind", KINDS)
def test_scorer_equals_the_keras_model_on_every_pair(kind, objective):
    spec = spec_of(kind, S_USERS, S_MOVIES, 6, 24, objective=objective, train_mean=3.5)
    model = saved_form(spec, seed=1, scale=0.7)
    expected = _keras_scores(model)
    weights = scorer(model, spec)
    users = np.arange(S_USERS)
    np.testing.assert_allclose(scoring.score_block(weights, users), expected, atol=2e-5)
    # The per-pair exp path (used when exp(U) exp(V) could overflow) and candidate re-scoring.
    np.testing.assert_allclose(scoring.score_block(weights, users, exact_exp=True), expected,
                               atol=2e-5)
    every = np.tile(np.arange(S_MOVIES), (S_USERS, 1))
    np.testing.assert_allclose(scoring.score_pairs(weights, users, every), expected, atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_scorer_falls_back_to_one_exp_per_term_for_large_weights(kind):
    spec = spec_of(kind, S_USERS, S_MOVIES, 6, 24, train_mean=3.5)
    model = saved_form(spec, seed=1, scale=5.0)
    big = scorer(model, spec)
    users = np.arange(S_USERS)
    assert not scoring.product_trick_is_exact(big, big.user_hidden(users)) or kind == "mf"
    huge = _keras_scores(model)
    tol = 2e-6 * np.abs(huge).max()  # float32 sums of terms this large
    every = np.tile(np.arange(S_MOVIES), (S_USERS, 1))
    np.testing.assert_allclose(scoring.score_block(big, users), huge, atol=tol)
    np.testing.assert_allclose(scoring.score_pairs(big, users, every), huge, atol=tol)
    pairs = np.repeat(users, S_MOVIES), every.reshape(-1)  # one pair at a time, as evaluate
    np.testing.assert_allclose(scoring.predict_pairs(big, *pairs), huge.reshape(-1), atol=tol)


def test_a_trained_model_scores_as_keras_does(twin_30k):
    from movierec.core.config import TrainParams
    from movierec.data.preprocess import prepare
    from movierec.train.training import train

    prepared = prepare(twin_30k.ratings, twin_30k.movies, 0.2, 1)
    n_users, n_movies = len(prepared.users), len(prepared.movies)
    result = train(prepared.train, prepared.test, n_users, n_movies,
                   TrainParams(epochs=1, latent_dim=8, hidden_units=32))
    weights = scorer(result.model, result.spec)
    users = np.arange(n_users)
    pairs = [np.repeat(users, n_movies).reshape(-1, 1),
             np.tile(np.arange(n_movies), n_users).reshape(-1, 1)]
    expected = result.model.predict(pairs, batch_size=65536, verbose=0).reshape(n_users, n_movies)
    np.testing.assert_allclose(scoring.score_block(weights, users), expected, atol=2e-5)


def test_block_size_and_padding_do_not_change_scores():
    spec = spec_of("residual", S_USERS, S_MOVIES, 6, 24, train_mean=3.5)
    weights = scorer(saved_form(spec, seed=1, scale=0.7), spec)
    whole = scoring.score_block(weights, np.arange(S_USERS))
    for size in (1, 3, 5, 16):
        parts = [scoring.score_block(weights, np.arange(s, min(S_USERS, s + size)))
                 for s in range(0, S_USERS, size)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_non_finite_weights_are_refused():
    spec = spec_of("residual", S_USERS, S_MOVIES, 6, 24, train_mean=3.5)
    model = saved_form(spec, seed=1)
    layer = model.get_layer("movie_embedding")
    w = layer.get_weights()[0]
    w[3, 1] = np.nan
    layer.set_weights([w])
    with pytest.raises(scoring.ScoringError, match="movie_embedding weights hold NaN"):
        scorer(model, spec)
