"""The ranking objectives: known answers for the losses and their gradients, the epoch data,
and the training step against Keras' own losses, optimiser and ``tf.GradientTape``."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import reference
from support.nets import planted_parity, share_ranked_own_parity_first
from support.reference import bce_terms, bpr_terms, loss_terms

from movierec.nets.keras_model import build_model
from movierec.nets.spec import NetSpec
from movierec.train.negatives import NegativeSampler
from movierec.train.objectives import epoch_data, mean_loss
from movierec.train.row_split import RowSplitModel
from movierec.train.rules import UpdateRule
from movierec.train.steps import TrainLoop

LOGITS = np.array([-2.0, 0.0, 3.0, 0.5], np.float32)
LABELS = np.array([1.0, 0.0, 1.0, 0.0], np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_bce_known_answer_and_keras_loss():
    # -log sigmoid(-2), -log(1 - sigmoid(0)), -log sigmoid(3), -log(1 - sigmoid(0.5)).
    expected = [np.log1p(np.exp(2.0)), np.log(2.0), np.log1p(np.exp(-3.0)), np.log1p(np.exp(0.5))]
    np.testing.assert_allclose(bce_terms(LOGITS, LABELS).numpy(), expected, rtol=1e-6)
    keras_loss = keras.losses.BinaryCrossentropy(from_logits=True)(LABELS, LOGITS)
    assert float(tf.reduce_mean(bce_terms(LOGITS, LABELS))) == pytest.approx(float(keras_loss),
                                                                              rel=1e-6)
    assert mean_loss("bce", LOGITS, LABELS) == pytest.approx(np.mean(expected), rel=1e-9)


def test_bce_gradient_is_sigmoid_minus_label_over_batch():
    s = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(bce_terms(s, LABELS))
    np.testing.assert_allclose(tape.gradient(loss, s).numpy(),
                               (_sigmoid(LOGITS) - LABELS) / len(LOGITS), rtol=1e-5, atol=1e-7)


def test_bpr_known_answer_gradient_and_keras_form():
    pos = np.array([2.0, -1.0, 0.0], np.float32)
    neg = np.array([1.0, 0.5, 0.0], np.float32)
    d = pos.astype(np.float64) - neg
    expected = -np.log(_sigmoid(d))  # log 2 where the scores tie
    np.testing.assert_allclose(bpr_terms(pos, neg).numpy(), expected, rtol=1e-6)
    # Keras' own ops, written as the definition: -log(sigmoid(s_pos - s_neg)).
    keras_form = -keras.ops.log(keras.ops.sigmoid(keras.ops.subtract(pos, neg)))
    np.testing.assert_allclose(bpr_terms(pos, neg).numpy(), keras_form, rtol=1e-6)
    p, n = tf.Variable(pos), tf.Variable(neg)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(bpr_terms(p, n))
    g_pos, g_neg = tape.gradient(loss, [p, n])
    np.testing.assert_allclose(g_pos.numpy(), -_sigmoid(-d) / 3, rtol=1e-5)
    np.testing.assert_allclose(g_neg.numpy(), _sigmoid(-d) / 3, rtol=1e-5)
    assert mean_loss("bpr", pos, np.zeros(0), neg) == pytest.approx(expected.mean(), rel=1e-9)
    # One batch of 2b scores: the positives first, then the negatives.
    both = loss_terms("bpr", tf.constant(np.concatenate([pos, neg])), tf.zeros([0]))
    np.testing.assert_allclose(both.numpy(), expected, rtol=1e-6)


def test_losses_stay_finite_for_huge_scores():
    big = np.array([-500.0, 500.0], np.float32)
    assert np.isfinite(bce_terms(big, np.array([1.0, 0.0], np.float32)).numpy()).all()
    assert np.isfinite(bpr_terms(big, big[::-1]).numpy()).all()
    assert np.isfinite(mean_loss("bce", big, np.array([1.0, 0.0])))


def _positives(n_users=30, n_movies=25, per_user=6, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    movies = np.concatenate([rng.choice(n_movies, per_user, replace=False)
                             for _ in range(n_users)])
    return users.astype(np.int32), movies.astype(np.int32), n_users, n_movies


def test_epoch_data_bce_has_every_positive_and_k_negatives_each():
    users, movies, n_users, n_movies = _positives()
    sampler = NegativeSampler(users, movies, n_users, n_movies)
    data = epoch_data("bce", users, movies, np.zeros(len(users)), np.random.default_rng(1),
                      sampler, negatives=3)
    assert len(data) == 4 * len(users)
    pos = data.targets == 1
    assert pos.sum() == len(users) and (data.targets[~pos] == 0).all()
    assert sorted(zip(data.users[pos], data.movies[pos], strict=True)) == sorted(
        zip(users, movies, strict=True))
    assert not sampler.rated(data.users[~pos], data.movies[~pos]).any()
    # Each user gets 3 negatives per positive.
    np.testing.assert_array_equal(np.bincount(data.users[~pos], minlength=n_users),
                                  3 * np.bincount(users, minlength=n_users))


def test_epoch_data_bpr_triples_and_rating_is_one_permutation():
    users, movies, n_users, n_movies = _positives()
    sampler = NegativeSampler(users, movies, n_users, n_movies)
    data = epoch_data("bpr", users, movies, np.zeros(len(users)), np.random.default_rng(1),
                      sampler, negatives=2)
    assert len(data) == len(data.negatives) == 2 * len(users) and len(data.targets) == 0
    assert sampler.rated(data.users, data.movies).all()  # (u, i): a rated pair
    assert not sampler.rated(data.users, data.negatives).any()  # (u, j): never
    y = np.arange(len(users), dtype=np.float32)
    rated = epoch_data("rating", users, movies, y, np.random.default_rng(5))
    order = np.random.default_rng(5).permutation(len(users))  # model.fit's one shuffle
    np.testing.assert_array_equal(rated.users, users[order])
    np.testing.assert_array_equal(rated.targets, y[order])


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective='mse'"):
        loss_terms("mse", tf.zeros([2]), tf.zeros([2]))
    with pytest.raises(ValueError, match="needs a sampler"):
        epoch_data("bce", np.zeros(2), np.zeros(2), np.zeros(2), np.random.default_rng(0))


# The step against Keras: the same model, the same batches, Keras' loss on the whole model's
# outputs, gradients by tf.GradientTape, and Keras' SGD with momentum applying them.

N_USERS, N_MOVIES, BATCH, STEPS = 40, 30, 16, 6


def _keras_reference(kind, objective, batches, lr, momentum):
    keras.utils.set_random_seed(11)
    model = build_model(NetSpec(kind, N_USERS, N_MOVIES, 4, 8, objective=objective))
    sgd = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    for u, m, y, j in batches:
        with tf.GradientTape() as tape:
            s = tf.reshape(model([u[:, None], m[:, None]], training=True), [-1])
            if objective == "bce":
                loss = bce(y, s)
            else:
                s_neg = tf.reshape(model([u[:, None], j[:, None]], training=True), [-1])
                loss = -keras.ops.mean(keras.ops.log(keras.ops.sigmoid(s - s_neg)))
        grads = tape.gradient(loss, model.trainable_variables)
        sgd.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return model


@pytest.mark.parametrize("kind", ["residual", "mf", "deep"])
@pytest.mark.parametrize("objective", ["bce", "bpr"])
@pytest.mark.parametrize("updates", ["lazy", "dense"])
def test_training_step_matches_keras_loss_tape_and_sgd(kind, objective, updates):
    rng = np.random.default_rng(4)
    n = BATCH * STEPS
    users = rng.integers(0, N_USERS, n).astype(np.int32)
    users[: n // 2] %= 5  # many rows untouched for several steps: lazy must catch them up
    movies = rng.integers(0, N_MOVIES, n).astype(np.int32)
    labels = rng.integers(0, 2, n).astype(np.float32)
    negs = rng.integers(0, N_MOVIES, n).astype(np.int32)
    lr, momentum = 0.1, 0.9
    batches = [(users[s:s + BATCH], movies[s:s + BATCH], labels[s:s + BATCH],
                negs[s:s + BATCH]) for s in range(0, n, BATCH)]
    reference = _keras_reference(kind, objective, batches, lr, momentum)

    keras.utils.set_random_seed(11)
    spec = NetSpec(kind, N_USERS, N_MOVIES, 4, 8, objective=objective)
    model = build_model(spec)
    initial = [w.numpy().copy() for w in model.weights]
    loop = TrainLoop(RowSplitModel(model, spec), BATCH,
                     UpdateRule(learning_rate=lr, momentum=momentum, table_updates=updates))
    y = labels if objective == "bce" else np.zeros(0, np.float32)
    mean = loop.epoch(tf.constant(users), tf.constant(movies), tf.constant(y), 4,
                      tf.constant(negs if objective == "bpr" else np.zeros(0, np.int32)))
    for ours, theirs, start in zip(model.weights, reference.weights, initial, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=3e-6, err_msg=ours.path)
        change = np.abs(ours.numpy() - start).max()
        if objective == "bpr" and ours.path in ("user_bias/embeddings", "side_out/bias"):
            assert change < 1e-7  # s(u, i) - s(u, j): terms shared by i and j cancel out
        else:
            assert change > 1e-4, ours.path  # every other weight trained
    assert np.isfinite(mean) and mean > 0


def test_rating_objective_terms_are_the_tutorials_squared_errors():
    p = tf.constant([1.0, 2.0, -1.0])
    t = tf.constant([0.5, 2.0, 1.0])
    np.testing.assert_allclose(reference.loss_terms("rating", p, t).numpy(), [0.25, 0.0, 4.0])
    assert mean_loss("rating", p.numpy(), t.numpy()) == pytest.approx(4.25 / 3)


@pytest.mark.parametrize("objective", ["bce", "bpr"])
@pytest.mark.parametrize("rule", [
    dict(table_updates="sparse"),
    dict(optimizer="adam", table_updates="sparse", learning_rate=0.01),
    dict(optimizer="adam", table_updates="dense", learning_rate=0.01),
    dict(table_updates="lazy", l2_embeddings=1e-3, l2_embeddings_form="whole_table"),
    dict(table_updates="lazy", l2_embeddings=1e-3, l2_dense=1e-4),
])
def test_every_update_rule_learns_a_planted_ranking(objective, rule):
    # Users 0-19 rate only even movies, users 20-39 only odd ones: after training, every user
    # must score an unrated movie of their own parity above one of the other parity.
    users, movies = planted_parity(N_USERS, N_MOVIES, 6)
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES)
    keras.utils.set_random_seed(2)
    spec = NetSpec("residual", N_USERS, N_MOVIES, 4, 8, objective=objective)
    loop = TrainLoop(RowSplitModel(build_model(spec), spec), BATCH,
                     UpdateRule(**{"learning_rate": 0.1, **rule}))
    data_rng = np.random.default_rng(1)
    losses = []
    for _ in range(30):
        data = epoch_data(objective, users, movies, np.zeros(len(users), np.float32), data_rng,
                          sampler, negatives=2)
        losses.append(loop.epoch(tf.constant(data.users), tf.constant(data.movies),
                                 tf.constant(data.targets), 8, tf.constant(data.negatives)))
    assert losses[-1] < 0.7 * losses[0], losses
    assert share_ranked_own_parity_first(loop, N_USERS, N_MOVIES) > 0.9
