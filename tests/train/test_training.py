import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from movierec.core.config import TrainParams
from movierec.data.preprocess import prepare
from movierec.evaluate.metrics import mse
from movierec.nets.keras_model import build_model, predict
from movierec.nets.spec import NetSpec
from movierec.train.row_split import RowSplitModel
from movierec.train.rules import UpdateRule
from movierec.train.scores import HISTORY_COLUMNS, VAL_COLUMNS
from movierec.train.steps import TrainLoop
from movierec.train.training import (
    split_validation,
    train,
)

NO_NEGATIVES = tf.zeros([0], tf.int32)  # run_steps' bpr input, empty for the other objectives


@pytest.fixture(scope="module")
def prepared(twin_30k):
    return prepare(twin_30k.ratings, twin_30k.movies, test_fraction=0.2, seed=1)


@pytest.fixture(scope="module")
def runs(prepared):
    params = TrainParams(epochs=3, seed=5)
    n, m = len(prepared.users), len(prepared.movies)
    return [train(prepared.train, prepared.test, n, m, params, verbose=0) for _ in range(2)]


def test_history_has_the_tutorials_curves(runs):
    history = runs[0].history
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3]
    # No regulariser: the loss is the MSE, on both splits.
    np.testing.assert_allclose(history["train_loss"], history["train_mse"], rtol=1e-6)
    np.testing.assert_allclose(history["test_loss"], history["test_mse"], rtol=1e-6)


def test_model_beats_the_global_mean_on_the_twin(runs, prepared):
    y = prepared.test["rating"].to_numpy()
    model_mse = mse(y, predict(runs[0].model, prepared.test))
    baseline = mse(y, np.full(len(y), runs[0].train_mean))
    assert model_mse < 0.85 * baseline, (model_mse, baseline)
    # The stored mean is the training split's, not the whole data's.
    assert runs[0].train_mean == pytest.approx(prepared.train["rating"].mean(), abs=1e-6)


def test_same_params_same_history_and_predictions(runs, prepared):
    a, b = runs
    np.testing.assert_array_equal(a.history.to_numpy(), b.history.to_numpy())
    np.testing.assert_array_equal(predict(a.model, prepared.test), predict(b.model, prepared.test))


# The project's training loop against Keras itself, on a small model and a fixed batch order.

N_USERS, N_MOVIES, BATCH = 60, 40, 32
TINY = NetSpec("residual", N_USERS, N_MOVIES, latent_dim=4, hidden_units=16)


def _tiny_data(n=BATCH * 12, seed=0):
    rng = np.random.default_rng(seed)
    # Few users and movies: ids repeat inside batches, which the sparse rule must sum.
    return (rng.integers(0, N_USERS, n).astype(np.int32),
            rng.integers(0, N_MOVIES, n).astype(np.int32),
            rng.normal(size=n).astype(np.float32))


def _tiny_model(seed=3):
    keras.utils.set_random_seed(seed)
    return build_model(TINY)


def _run_loop(model, users, movies, y, updates, lr=0.05, momentum=0.9, steps_per_call=5,
              **rule):
    rule = UpdateRule(learning_rate=lr, momentum=momentum, table_updates=updates, **rule)
    loop = TrainLoop(RowSplitModel(model, TINY), BATCH, rule)
    return loop.epoch(tf.constant(users), tf.constant(movies), tf.constant(y), steps_per_call)


@pytest.mark.parametrize("updates", ["dense", "lazy"])
def test_dense_and_lazy_rules_are_keras_sgd_with_momentum(updates):
    users, movies, y = _tiny_data()
    # Some ids never appear in the first batches, so lazy rows go many steps untouched.
    users[: BATCH * 6] %= N_USERS // 3
    reference = _tiny_model()
    reference.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=0.05,
                                                                  momentum=0.9))
    fit = reference.fit([users[:, None], movies[:, None]], y, batch_size=BATCH, epochs=1,
                        shuffle=False, verbose=0)
    model = _tiny_model()
    loss = _run_loop(model, users, movies, y, updates)
    for ours, theirs in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-6, err_msg=ours.path)
    assert loss == pytest.approx(fit.history["loss"][0], rel=1e-5)


def test_lazy_rule_catches_up_rows_untouched_for_a_long_time():
    # Row 0 is touched once at the start, then left alone for many steps: under Keras' rule it
    # keeps drifting by its decaying momentum, which lazy applies in closed form at the end.
    n = BATCH * 40
    users = np.full(n, 1, np.int32)
    users[:BATCH] = 0
    movies = np.arange(n, dtype=np.int32) % N_MOVIES
    y = np.random.default_rng(2).normal(size=n).astype(np.float32)
    weights = {}
    for updates in ("dense", "lazy"):
        model = _tiny_model()
        _run_loop(model, users, movies, y, updates, momentum=0.95)
        weights[updates] = model.get_layer("user_embedding").embeddings.numpy()
    start = _tiny_model().get_layer("user_embedding").embeddings.numpy()
    assert np.abs(weights["dense"][0] - start[0]).max() > 1e-3  # it did move
    np.testing.assert_allclose(weights["lazy"], weights["dense"], atol=1e-6)


def _numpy_sparse_momentum(tables, slots, grads, ids, lr, momentum):
    """TF1's sparse rule by hand: per distinct row, m = momentum * m - lr * sum(g); w += m."""
    for table, slot, g, i in zip(tables, slots, grads, ids, strict=True):
        for row in np.unique(i):
            slot[row] = momentum * slot[row] - lr * g[i == row].sum(axis=0)
            table[row] += slot[row]


def test_sparse_rule_moves_only_touched_rows_by_tf1_sparse_momentum():
    users, movies, y = _tiny_data(n=BATCH * 2)
    model = _tiny_model()
    split = RowSplitModel(model, TINY)
    loop = TrainLoop(split, BATCH, UpdateRule(learning_rate=0.05, table_updates="sparse"))
    tables = [t.numpy().copy() for t in split.tables]
    slots = [np.zeros_like(t) for t in tables]
    for step in range(2):
        part = slice(step * BATCH, (step + 1) * BATCH)
        u, m = tf.constant(users[part]), tf.constant(movies[part])
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(split.forward([u, m], training=True) - y[part]))
        grads = [g.values.numpy() for g in tape.gradient(loss, split.tables)]
        ids = [[users[part], movies[part]][f] for f in split.feeds]
        _numpy_sparse_momentum(tables, slots, grads, ids, 0.05, 0.9)
        loop.run_steps(tf.constant(users), tf.constant(movies), tf.constant(y), NO_NEGATIVES,
                       tf.constant(step), tf.constant(1))
        loop.push()  # the loop trains its own copy of the weights
        for ours, expected in zip(split.tables, tables, strict=True):
            np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    untouched = np.setdiff1d(np.arange(N_USERS), users)
    assert untouched.size > 0
    before = _tiny_model().get_layer("user_embedding").embeddings.numpy()
    after = model.get_layer("user_embedding").embeddings.numpy()
    np.testing.assert_array_equal(after[untouched], before[untouched])


def test_row_split_forward_is_the_models_prediction():
    users, movies, _ = _tiny_data(n=100)
    model = _tiny_model()
    ours = RowSplitModel(model, TINY).forward([tf.constant(users), tf.constant(movies)],
                                        training=False).numpy()
    theirs = model.predict([users[:, None], movies[:, None]], verbose=0).reshape(-1)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_steps_per_call_changes_speed_not_results():
    users, movies, y = _tiny_data()
    weights = []
    for steps_per_call in (1, 5, 64):
        model = _tiny_model()
        _run_loop(model, users, movies, y, "lazy", steps_per_call=steps_per_call)
        weights.append([w.numpy() for w in model.weights])
    for other in weights[1:]:
        for a, b in zip(weights[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


# Early stopping on a validation split carved out of the train split.

@pytest.fixture(scope="module")
def small_overfit(twin_30k):
    data = prepare(twin_30k.ratings, twin_30k.movies, test_fraction=0.2, seed=1)
    return data, TrainParams(epochs=6, seed=5, val_fraction=0.2, patience=1,
                             learning_rate=0.3, hidden_units=64)


def test_validation_split_is_seeded_disjoint_and_complete(prepared):
    fit, val = split_validation(prepared.train, 0.25, seed=3)
    again, _ = split_validation(prepared.train, 0.25, seed=3)
    assert fit.index.equals(again.index)
    assert len(val) == round(0.25 * len(prepared.train))
    assert fit.index.intersection(val.index).empty
    assert len(fit) + len(val) == len(prepared.train)
    assert split_validation(prepared.train, 0.0, seed=3) == (prepared.train, None)


def test_early_stopping_never_reads_the_test_split(small_overfit):
    data, params = small_overfit
    n, m = len(data.users), len(data.movies)
    honest = train(data.train, data.test, n, m, params, verbose=0)
    # The same run scored against a nonsense test split must decide exactly the same things.
    nonsense = data.test.assign(rating=np.random.default_rng(0).uniform(0.5, 5, len(data.test)))
    blind = train(data.train, nonsense, n, m, params, verbose=0)
    assert honest.best_epoch == blind.best_epoch
    assert len(honest.history) == len(blind.history)
    np.testing.assert_array_equal(honest.history["val_mse"], blind.history["val_mse"])
    for a, b in zip(honest.model.weights, blind.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_early_stopping_keeps_the_best_validation_epoch(small_overfit):
    data, params = small_overfit
    result = train(data.train, data.test, len(data.users), len(data.movies), params, verbose=0)
    history = result.history
    assert tuple(history.columns) == HISTORY_COLUMNS + VAL_COLUMNS
    best = int(history["val_mse"].idxmin()) + 1
    assert result.best_epoch == best
    # It stopped `patience` epochs after the best one (or ran out of epochs).
    assert len(history) == min(best + params.patience, params.epochs)
    assert result.n_fit == len(data.train) - round(0.2 * len(data.train))
    # The returned model is the best epoch's: its test MSE is that row's.
    y = data.test["rating"].to_numpy()
    assert mse(y, predict(result.model, data.test)) == pytest.approx(
        history["test_mse"].iloc[best - 1], rel=1e-5)


def test_refit_trains_on_the_whole_train_split_for_the_chosen_epochs(small_overfit):
    data, params = small_overfit
    n, m = len(data.users), len(data.movies)
    refit = train(data.train, data.test, n, m, dataclasses.replace(params, refit=True),
                  verbose=0)
    chosen = train(data.train, data.test, n, m, params, verbose=0)
    assert refit.selection["best_epoch"] == chosen.best_epoch
    assert refit.selection["val_mse"] == chosen.history["val_mse"].min()
    assert refit.n_fit == len(data.train)
    # Known answer: the refit run is a plain run without a validation split, for that many
    # epochs, from the same initial weights and shuffles.
    plain = train(data.train, data.test, n, m, dataclasses.replace(
        params, val_fraction=0.0, epochs=chosen.best_epoch), verbose=0)
    assert refit.best_epoch == len(refit.history) == chosen.best_epoch
    np.testing.assert_array_equal(refit.history.to_numpy(), plain.history.to_numpy())
    for a, b in zip(refit.model.weights, plain.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kind", ["mf", "deep"])
def test_variants_train_with_the_same_loop(kind, prepared):
    params = TrainParams(model=kind, epochs=2, seed=5, hidden_units=32, dropout=0.2)
    result = train(prepared.train, prepared.test, len(prepared.users), len(prepared.movies),
                   params, verbose=0)
    result.model.get_layer("dot" if kind == "mf" else "hidden")  # raises if absent
    y = prepared.test["rating"].to_numpy()
    assert mse(y, predict(result.model, prepared.test)) < mse(y, np.full(len(y),
                                                                          result.train_mean))


# Regularisation and Adam against Keras' own model.fit, which is the reference for both.

def _keras_reference(users, movies, y, optimizer, l2_tables=0.0, l2_kernels=0.0):
    """model.fit for one epoch in order, with Keras' own L2 regularisers on the weights."""
    model = _tiny_model()
    for v in model.trainable_variables:
        table = "embedding" in v.path or "bias" in v.path.split("/")[0]
        if table and l2_tables:
            v.regularizer = keras.regularizers.L2(l2_tables)
        elif v.path.endswith("/kernel") and l2_kernels:
            v.regularizer = keras.regularizers.L2(l2_kernels)
    model.compile(loss="mse", optimizer=optimizer)
    fit = model.fit([users[:, None], movies[:, None]], y, batch_size=BATCH, epochs=1,
                    shuffle=False, verbose=0)
    return model, fit.history["loss"][0]


def _assert_same_weights(ours, theirs, atol):
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=atol, err_msg=a.path)


@pytest.mark.parametrize("updates", ["dense", "lazy"])
def test_whole_table_and_dense_l2_are_keras_regularisers(updates):
    users, movies, y = _tiny_data()
    users[: BATCH * 6] %= N_USERS // 3  # rows left untouched for many steps still decay
    reference, _ = _keras_reference(users, movies, y,
                                    keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                                    l2_tables=0.01, l2_kernels=0.003)
    assert sum(float(v) for v in reference.losses) > 0  # the regularisers are in play
    model = _tiny_model()
    _run_loop(model, users, movies, y, updates, l2_embeddings=0.01,
              l2_embeddings_form="whole_table", l2_dense=0.003)
    _assert_same_weights(model, reference, atol=3e-6)


@pytest.mark.parametrize("updates", ["dense", "lazy"])
def test_lazy_whole_table_decay_matches_dense_over_long_gaps(updates):
    # Row 0 is touched in the first batch only; for 39 steps it is pulled to 0 by the penalty
    # while its momentum decays, which lazy computes from the matrix powers.
    n = BATCH * 40
    users = np.full(n, 1, np.int32)
    users[:BATCH] = 0
    movies = np.arange(n, dtype=np.int32) % N_MOVIES
    y = np.random.default_rng(2).normal(size=n).astype(np.float32)
    model = _tiny_model()
    _run_loop(model, users, movies, y, updates, momentum=0.95, l2_embeddings=0.2,
              l2_embeddings_form="whole_table")
    if updates == "dense":
        pytest.dense_weights = [w.numpy() for w in model.weights]
        start = _tiny_model().get_layer("user_embedding").embeddings.numpy()
        assert np.abs(model.get_layer("user_embedding").embeddings.numpy()[2:]).max() < \
            0.5 * np.abs(start[2:]).max()  # never-touched rows have decayed towards 0
        return
    for ours, dense in zip(model.weights, pytest.dense_weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), dense, atol=1e-6, err_msg=ours.path)


def test_adam_dense_is_keras_adam():
    # Distinct ids within each batch: Keras 3 squares a repeated id's gradients one by one
    # for Adam's second moment, while the loop squares the row's summed gradient (Adam's rule
    # for the row's gradient); without repeats the two agree.
    rng = np.random.default_rng(4)
    users = np.concatenate([rng.permutation(N_USERS)[:BATCH] for _ in range(12)]).astype(np.int32)
    movies = np.concatenate([rng.permutation(N_MOVIES)[:BATCH] for _ in range(12)]).astype(np.int32)
    y = rng.normal(size=len(users)).astype(np.float32)
    reference, keras_loss = _keras_reference(users, movies, y,
                                             keras.optimizers.Adam(learning_rate=0.01))
    model = _tiny_model()
    loss = _run_loop(model, users, movies, y, "dense", lr=0.01, optimizer="adam")
    _assert_same_weights(model, reference, atol=2e-6)
    assert loss == pytest.approx(keras_loss, rel=1e-5)


def test_sparse_adam_moves_only_touched_rows():
    users, movies, y = _tiny_data(n=BATCH * 3)
    users %= N_USERS // 2
    model = _tiny_model()
    _run_loop(model, users, movies, y, "sparse", lr=0.01, optimizer="adam")
    before = _tiny_model().get_layer("user_embedding").embeddings.numpy()
    after = model.get_layer("user_embedding").embeddings.numpy()
    np.testing.assert_array_equal(after[N_USERS // 2:], before[N_USERS // 2:])
    assert np.abs(after[: N_USERS // 2] - before[: N_USERS // 2]).min(axis=1).max() > 1e-3


def test_per_rating_l2_pulls_each_row_by_its_count_in_the_batch():
    # One plain SGD step (momentum 0) by hand: the penalty l2 * sum over the batch's ratings of
    # their rows' squares, divided by the batch size, adds 2 * l2 * count / B * w to a row's
    # gradient, where count is how many of the batch's ratings read it.
    users, movies, y = _tiny_data(n=BATCH)
    model = _tiny_model()
    split = RowSplitModel(model, TINY)
    start = [t.numpy().copy() for t in split.tables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(split.forward([tf.constant(users),
                                                       tf.constant(movies)], True) - y))
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, split.tables)]
    lr, l2 = 0.05, 0.1
    loop = TrainLoop(split, BATCH, UpdateRule(learning_rate=lr, momentum=0.0,
                                              table_updates="sparse", l2_embeddings=l2))
    loop.run_steps(tf.constant(users), tf.constant(movies), tf.constant(y), NO_NEGATIVES,
                   tf.constant(0), tf.constant(1))
    loop.push()
    for table, w, g, f in zip(split.tables, start, grads, split.feeds, strict=True):
        ids = [users, movies][f]
        count = np.bincount(ids, minlength=len(w))[:, None]
        expected = w - lr * (g + 2 * l2 * count / BATCH * w)
        np.testing.assert_allclose(table.numpy(), expected, atol=1e-6)


def test_penalty_is_the_l2_terms_of_the_loss():
    model = _tiny_model()
    split = RowSplitModel(model, TINY)
    users, movies = np.array([0, 0, 5]), np.array([1, 2, 2])
    tables = {v.path.split("/")[0]: v.numpy().astype(np.float64) for v in model.weights}

    def rows_sq(name, ids):
        return np.sum(tables[name][ids] ** 2, axis=1).mean()
    per_rating = 0.5 * (rows_sq("user_embedding", users) + rows_sq("movie_embedding", movies)
                        + rows_sq("user_bias", users) + rows_sq("movie_bias", movies))
    whole = 0.5 * sum(np.sum(tables[n] ** 2) for n in
                      ("user_embedding", "movie_embedding", "user_bias", "movie_bias"))
    kernels = 0.25 * sum(np.sum(v.numpy().astype(np.float64) ** 2) for v in model.weights
                         if v.path.endswith("/kernel"))

    def penalty(**rule):
        return TrainLoop(split, BATCH, UpdateRule(**rule)).penalty(users, movies)
    assert penalty() == 0.0
    assert penalty(l2_embeddings=0.5) == pytest.approx(per_rating, rel=1e-9)
    assert penalty(l2_embeddings=0.5, l2_embeddings_form="whole_table") == pytest.approx(
        whole, rel=1e-9)
    assert penalty(l2_dense=0.25) == pytest.approx(kernels, rel=1e-9)
