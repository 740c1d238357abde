"""The pooled pass (``pooled.PooledNet``) against the Keras model built from the same spec:
its pair scores against the model's output on every (user, pool movie) pair, and the sampled
softmax's loss and every gradient against a GradientTape through the model's own layers."""

import numpy as np
import pytest
import tensorflow as tf
from support.nets import KINDS, random_model, spec_of

from movierec.nets.pooled import PooledNet
from movierec.nets.spec import USER
from movierec.train.steps import RowSplitModel

N_USERS, N_MOVIES, K, H = 30, 40, 6, 16
B, P = 12, 20  # users in a batch, movies in the pool
TOL = {"rtol": 2e-5, "atol": 2e-6}


def _setup(kind: str, seed: int = 0):
    spec = spec_of(kind, N_USERS, N_MOVIES, K, H, objective="bce")
    split = RowSplitModel(random_model(spec, seed), spec)
    rng = np.random.default_rng(seed + 1)
    users = tf.constant(rng.integers(0, 8, B).astype(np.int32))  # repeats
    pool = rng.integers(0, N_MOVIES, P).astype(np.int32)
    pool[1] = pool[0]  # a movie twice in the pool
    is_user = [t.reads == USER for t in spec.tables]
    user_rows = [tf.gather(tab, users) for tab, u in zip(split.tables, is_user, strict=True)
                 if u]
    pool_rows = [tf.gather(tab, pool) for tab, u in zip(split.tables, is_user, strict=True)
                 if not u]
    return spec, split, user_rows, pool_rows, pool


def _keras_scores(split: RowSplitModel, spec, user_rows, pool_rows) -> tf.Tensor:
    """The Keras model's own layers on every (user, pool movie) pair, as (B, P)."""
    users, movies = iter(user_rows), iter(pool_rows)
    pairs = [tf.repeat(next(users), P, axis=0) if t.reads == USER
             else tf.tile(next(movies), [B, 1]) for t in spec.tables]
    return tf.reshape(split.head(pairs, training=False), [B, P])


@pytest.mark.parametrize("kind", KINDS)
def test_pair_scores_are_the_keras_models_outputs(kind):
    spec, split, user_rows, pool_rows, _ = _setup(kind)
    got, _ = PooledNet(spec).scores(user_rows, pool_rows, split.dense)
    expected = _keras_scores(split, spec, user_rows, pool_rows)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **TOL)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_softmax_loss_and_grads_match_keras_tape(kind, compiled):
    spec, split, user_rows, pool_rows, pool = _setup(kind, seed=3)
    rng = np.random.default_rng(5)
    positives = tf.constant(rng.integers(0, P, B).astype(np.int32))
    log_q = tf.constant(rng.normal(-3.0, 1.0, P).astype(np.float32))
    # Accidental hits: the other copy of a positive movie that is in the pool twice.
    pos_movie = pool[positives.numpy()]
    mask = (pool[None, :] == pos_movie[:, None]) & (np.arange(P)[None, :]
                                                     != positives.numpy()[:, None])
    assert mask.any()
    mask = tf.constant(mask)
    scale = tf.constant(17.0)

    watched = user_rows + pool_rows + list(split.dense)
    with tf.GradientTape() as tape:
        tape.watch(watched)
        logits = _keras_scores(split, spec, user_rows, pool_rows) - log_q[None, :]
        logits = tf.where(mask, -1e30, logits)
        terms = tf.nn.sparse_softmax_cross_entropy_with_logits(positives, logits)
        loss = tf.reduce_sum(terms) / scale
    expected = tape.gradient(loss, watched)

    net = PooledNet(spec)
    call = net.softmax_loss_and_grads
    if compiled:
        call = tf.function(call)
    got_terms, user_grads, pool_grads, dense_grads = call(
        user_rows, pool_rows, list(split.dense), positives, scale, log_q, mask)
    np.testing.assert_allclose(got_terms.numpy(), terms.numpy(), **TOL)
    got = [*user_grads, *pool_grads, *dense_grads]
    assert len(got) == len(expected)
    for g, e, w in zip(got, expected, watched, strict=True):
        assert g.shape == w.shape  # a row per user of the batch and per movie of the pool
        np.testing.assert_allclose(g.numpy(), tf.convert_to_tensor(e).numpy(), **TOL)


def test_dropout_is_refused_with_a_clear_error():
    spec = spec_of("residual", N_USERS, N_MOVIES, K, H, dropout=0.2, objective="bce")
    with pytest.raises(ValueError, match=r"PooledNet: received dropout=0.2 \(expected 0"):
        PooledNet(spec)
