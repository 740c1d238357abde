"""The pooled pass (``pooled.PooledNet``) against the Keras model built from the same spec:
its pair scores against the model's output on every (user, pool movie) pair and on aligned
pairs, and both sampled softmaxes' losses and every gradient against a GradientTape through the
model's own layers; with each way of computing the side branch's grid of pairs."""

import numpy as np
import pytest
import tensorflow as tf
from support.nets import KINDS, random_model, spec_of

from movierec.nets.pooled import PAIR_KERNELS, PooledNet
from movierec.nets.spec import USER
from movierec.train.row_split import RowSplitModel

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
    b, p = user_rows[0].shape[0], pool_rows[0].shape[0]
    users, movies = iter(user_rows), iter(pool_rows)
    pairs = [tf.repeat(next(users), p, axis=0) if t.reads == USER
             else tf.tile(next(movies), [b, 1]) for t in spec.tables]
    return tf.reshape(split.head(pairs, training=False), [b, p])


def _keras_pair_scores(split: RowSplitModel, spec, user_rows, movie_rows) -> tf.Tensor:
    """The Keras model's own layers on the aligned pairs (user b, movie b), as (B,)."""
    users, movies = iter(user_rows), iter(movie_rows)
    pairs = [next(users) if t.reads == USER else next(movies) for t in spec.tables]
    return tf.reshape(split.head(pairs, training=False), [-1])


@pytest.mark.parametrize("kind", KINDS)
def test_pair_scores_are_the_keras_models_outputs(kind):
    spec, split, user_rows, pool_rows, _ = _setup(kind)
    net = PooledNet(spec)
    got, _ = net.scores(user_rows, pool_rows, split.dense)  # every (user, pool movie) pair
    expected = _keras_scores(split, spec, user_rows, pool_rows)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **TOL)
    movie_rows = [r[:B] for r in pool_rows]  # and the aligned pairs (user b, movie b)
    got, _ = net.pair_scores(user_rows, movie_rows, split.dense)
    expected = _keras_pair_scores(split, spec, user_rows, movie_rows)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **TOL)


def _assert_grads_equal(user_grads, pool_grads, dense_grads, expected, watched):
    got = [*user_grads, *pool_grads, *dense_grads]
    assert len(got) == len(expected)
    for g, e, w in zip(got, expected, watched, strict=True):
        assert g.shape == w.shape  # a row per user of the batch and per movie of the pool
        np.testing.assert_allclose(g.numpy(), tf.convert_to_tensor(e).numpy(), **TOL)


def _assert_pass_equal(loss_and_grads, terms_only, compiled, args, extra, scale, terms,
                       expected, watched):
    """The pass's terms and gradients, and its forward alone, equal the tape's."""
    if compiled:
        loss_and_grads = tf.function(loss_and_grads)
    got_terms, user_grads, pool_grads, dense_grads = loss_and_grads(*args, scale, *extra)
    np.testing.assert_allclose(got_terms.numpy(), terms.numpy(), **TOL)
    _assert_grads_equal(user_grads, pool_grads, dense_grads, expected, watched)
    forward = terms_only(*args, *extra)
    forward = forward[0] if isinstance(forward, tuple) else forward
    np.testing.assert_allclose(forward.numpy(), terms.numpy(), **TOL)


@pytest.mark.parametrize("kernel", PAIR_KERNELS)
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_softmax_loss_and_grads_match_keras_tape(kind, compiled, kernel):
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

    net = PooledNet(spec, kernel)
    _assert_pass_equal(net.softmax_loss_and_grads, net.softmax_terms, compiled,
                       (user_rows, pool_rows, list(split.dense), positives), (log_q, mask),
                       scale, terms, expected, watched)


@pytest.mark.parametrize("kernel", PAIR_KERNELS)
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_sampled_softmax_loss_and_grads_match_keras_tape(kind, compiled, kernel):
    spec, split, user_rows, pool_rows, _ = _setup(kind, seed=4)
    rng = np.random.default_rng(6)
    positives = rng.integers(0, P, B).astype(np.int32)  # pool columns, some shared
    negatives = np.sort(rng.choice(P, 7, replace=False)).astype(np.int32)
    positives[0] = negatives[2]  # a positive drawn as a negative too: left out of its row
    positives, negatives = tf.constant(positives), tf.constant(negatives)
    log_q = tf.constant(rng.normal(-3.0, 1.0, P).astype(np.float32))
    scale = tf.constant(13.0)

    watched = user_rows + pool_rows + list(split.dense)
    with tf.GradientTape() as tape:
        tape.watch(watched)
        pos_rows = [tf.gather(r, positives) for r in pool_rows]
        neg_rows = [tf.gather(r, negatives) for r in pool_rows]
        own = _keras_pair_scores(split, spec, user_rows, pos_rows) - tf.gather(log_q, positives)
        others = (_keras_scores(split, spec, user_rows, neg_rows)
                  - tf.gather(log_q, negatives)[None, :])
        others = tf.where(negatives[None, :] == positives[:, None], -1e30, others)
        logits = tf.concat([own[:, None], others], 1)
        terms = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.zeros(B, tf.int32), logits)
        loss = tf.reduce_sum(terms) / scale
    expected = tape.gradient(loss, watched)

    net = PooledNet(spec, kernel)
    _assert_pass_equal(net.sampled_softmax_loss_and_grads, net.sampled_softmax_terms, compiled,
                       (user_rows, pool_rows, list(split.dense), positives, negatives),
                       (log_q,), scale, terms, expected, watched)


def test_dropout_is_refused_with_a_clear_error():
    spec = spec_of("residual", N_USERS, N_MOVIES, K, H, dropout=0.2, objective="bce")
    with pytest.raises(ValueError, match=r"PooledNet: received dropout=0.2 \(expected 0"):
        PooledNet(spec)


def test_an_unknown_kernel_is_refused_with_a_clear_error():
    spec = spec_of("residual", N_USERS, N_MOVIES, K, H, objective="bce")
    with pytest.raises(ValueError, match=r"received kernel='cuda' \(expected one of numba"):
        PooledNet(spec, "cuda")
