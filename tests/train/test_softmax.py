"""The softmax objective: the pools (who is in them, the log-Q correction, the mask of
accidental hits) and the training step against Keras' model, a GradientTape and Keras' SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.nets import planted_parity, rated_per_user, share_ranked_own_parity_first

from movierec.core.config import TrainParams
from movierec.core.errors import ParamsError
from movierec.nets.keras_model import build_model
from movierec.nets.spec import NetSpec
from movierec.train.negatives import NegativeSampler
from movierec.train.objectives import epoch_data
from movierec.train.pools import Pools
from movierec.train.row_split import RowSplitModel
from movierec.train.rules import UpdateRule
from movierec.train.steps import TrainLoop

N_USERS, N_MOVIES, BATCH, STEPS = 40, 30, 16, 6


def _rated(seed=0, per_user=5):
    return rated_per_user(N_USERS, N_MOVIES, seed, per_user)  # movie 29 is never rated


@pytest.mark.parametrize("how", ["uniform", "popularity"])
def test_pool_holds_the_positives_and_distinct_catalogue_draws(how):
    users, movies = _rated()
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES, how)
    pools = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=5)
    positives = tf.constant(movies[:BATCH])
    pool, columns, log_q = (t.numpy() for t in pools.pool(positives, tf.constant(3)))
    assert len(np.unique(pool)) == len(pool) <= BATCH + 8
    np.testing.assert_array_equal(pool[columns], movies[:BATCH])
    assert set(pool) <= set(sampler.catalogue)
    # log q: the log of the chance of being in a pool of B data draws and N sampler draws.
    p_data = np.bincount(movies, minlength=N_MOVIES) / len(movies)
    p_neg = np.zeros(N_MOVIES)
    p_neg[sampler.catalogue] = sampler.probability
    q = 1 - (1 - p_data) ** BATCH * (1 - p_neg) ** 8
    np.testing.assert_allclose(np.exp(log_q), q[pool], rtol=1e-5)
    # The same (seed, step) draws the same pool; another step another one.
    again = pools.pool(positives, tf.constant(3))[0].numpy()
    np.testing.assert_array_equal(again, pool)
    other = [pools.pool(positives, tf.constant(s))[0].numpy() for s in range(4, 9)]
    assert any(len(o) != len(pool) or (o != pool).any() for o in other)


def test_sampled_pool_keeps_the_draws_apart_and_corrects_for_them_alone():
    users, movies = _rated()
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES, "popularity")
    pools = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=5, sampled=True)
    positives = tf.constant(movies[:BATCH])
    pool, columns, drawn, log_q = (t.numpy() for t in pools.sampled_pool(positives,
                                                                         tf.constant(3)))
    np.testing.assert_array_equal(pool[columns], movies[:BATCH])
    assert len(np.unique(drawn)) == len(drawn) <= 8 and set(pool[drawn]) <= set(
        sampler.catalogue)
    # The same draws as the batch pool of the same (seed, step): its movies beyond the
    # positives are all among them.
    batch_pool = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=5).pool(positives,
                                                                         tf.constant(3))[0]
    assert set(batch_pool.numpy()) - set(movies[:BATCH]) <= set(pool[drawn])
    # log q: the chance of being among N sampler draws; the batch's positives play no part.
    p_neg = np.zeros(N_MOVIES)
    p_neg[sampler.catalogue] = sampler.probability
    np.testing.assert_allclose(np.exp(log_q), (1 - (1 - p_neg) ** 8)[pool], rtol=1e-5)


def test_sampled_pool_with_batch_negatives_shares_the_first_positives_and_corrects_for_them():
    users, movies = _rated()
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES)
    pools = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=5, sampled=True, batch_negatives=5)
    positives = tf.constant(movies[:BATCH])
    pool, _, drawn, log_q = (t.numpy() for t in pools.sampled_pool(positives,
                                                                   tf.constant(3)))
    alone = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=5, sampled=True)
    _, _, drawn_alone, _ = (t.numpy() for t in alone.sampled_pool(positives, tf.constant(3)))
    # The shared negatives: the first 5 positives' movies and the same draws, each once.
    assert len(np.unique(drawn)) == len(drawn)
    assert set(pool[drawn]) == set(movies[:5]) | set(pool[drawn_alone])
    # log q: the chance of being among 5 data draws or N sampler draws.
    p_data = np.bincount(movies, minlength=N_MOVIES) / len(movies)
    p_neg = np.zeros(N_MOVIES)
    p_neg[sampler.catalogue] = sampler.probability
    q = 1 - (1 - p_data) ** 5 * (1 - p_neg) ** 8
    np.testing.assert_allclose(np.exp(log_q), q[pool], rtol=1e-5)


def test_sampled_mask_is_exactly_the_rated_pairs():
    rng = np.random.default_rng(0)
    n_users, n_movies = 300, 200
    keys = np.unique(rng.integers(0, n_users * n_movies, 6_000))
    users, movies = (keys // n_movies).astype(np.int32), (keys % n_movies).astype(np.int32)
    sampler = NegativeSampler(users, movies, n_users, n_movies)
    pools = Pools(sampler, movies, n_movies, 16, 64, seed=1, sampled=True)
    batch = rng.integers(0, n_users, 50).astype(np.int32)  # repeated users too
    drawn = rng.choice(n_movies, 37, replace=False).astype(np.int32)
    found = pools.sampled_mask(tf.constant(batch), tf.constant(drawn)).numpy()
    rated = np.zeros((n_users, n_movies), bool)
    rated[users, movies] = True
    np.testing.assert_array_equal(found, rated[batch][:, drawn])
    assert found.any() and not found.all()
    threaded = Pools(sampler, movies, n_movies, 16, 64, seed=1, sampled=True, threads=2)
    np.testing.assert_array_equal(
        threaded.sampled_mask(tf.constant(batch), tf.constant(drawn)).numpy(), found)


def test_mask_is_every_rated_pool_movie_but_the_positive_and_full_pool_is_the_catalogue():
    users, movies = _rated()
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES)
    pools = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=1)
    pool, columns, _ = pools.pool(tf.constant(movies[:BATCH]), tf.constant(1))
    mask = pools.mask(tf.constant(users[:BATCH]), pool, columns).numpy()
    pool, columns = pool.numpy(), columns.numpy()
    for b in range(BATCH):
        expected = sampler.rated(np.full(len(pool), users[b]), pool)
        expected[columns[b]] = False
        np.testing.assert_array_equal(mask[b], expected)
    assert mask.any()
    full = Pools(sampler, movies, N_MOVIES, 1000, BATCH, seed=1)
    assert full.full
    pool, columns, log_q = full.pool(tf.constant(movies[:BATCH]), tf.constant(1))
    np.testing.assert_array_equal(pool.numpy(), sampler.catalogue)
    assert log_q is None
    np.testing.assert_array_equal(pool.numpy()[columns.numpy()], movies[:BATCH])


def _keras_logits(model, u, m, pools, step):
    """(logits (B, columns), each positive's column) of a batch, every pair through the whole
    Keras model: against the batch's pool, or (``pools.sampled``) against its own movie, then
    the sampled movies."""
    b = len(u)
    if not pools.sampled:
        pool, columns, log_q = pools.pool(tf.constant(m), tf.constant(step))
        p = int(tf.size(pool))
        s = model([np.repeat(u, p)[:, None], np.tile(pool.numpy(), b)[:, None]], training=True)
        logits = tf.reshape(s, [b, p]) - log_q[None, :]
        return tf.where(pools.mask(tf.constant(u), pool, columns), -1e30, logits), columns
    pool, columns, drawn, log_q = pools.sampled_pool(tf.constant(m), tf.constant(step))
    negatives, n = tf.gather(pool, drawn).numpy(), int(tf.size(drawn))
    own = tf.reshape(model([u[:, None], m[:, None]], training=True), [b])
    others = tf.reshape(model([np.repeat(u, n)[:, None], np.tile(negatives, b)[:, None]],
                              training=True), [b, n])
    left_out = (negatives[None, :] == m[:, None]) | pools.sampled_mask(tf.constant(u),
                                                                       tf.constant(negatives))
    others = tf.where(left_out, -1e30, others - tf.gather(log_q, drawn)[None, :])
    own = own - tf.gather(log_q, columns)
    return tf.concat([own[:, None], others], 1), np.zeros(b, np.int32)


def _keras_reference(kind, batches, pools, lr, momentum, l2):
    keras.utils.set_random_seed(11)
    model = build_model(NetSpec(kind, N_USERS, N_MOVIES, 4, 8, objective="softmax"))
    sgd = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
    for step, (u, m) in enumerate(batches, start=1):
        b = len(u)
        with tf.GradientTape() as tape:
            logits, columns = _keras_logits(model, u, m, pools, step)
            loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                columns, logits, from_logits=True))
            if l2:  # each positive's own user and movie rows
                for name, ids in (("user_embedding", u), ("user_bias", u),
                                  ("movie_embedding", m), ("movie_bias", m)):
                    if kind == "deep" and name.endswith("bias"):
                        continue  # the deep network has no bias tables
                    rows = tf.gather(model.get_layer(name).embeddings, ids)
                    loss += l2 * tf.reduce_sum(tf.square(rows)) / b
        grads = tape.gradient(loss, model.trainable_variables)
        sgd.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return model


@pytest.mark.parametrize("kind", ["residual", "mf", "deep"])
@pytest.mark.parametrize("updates,l2,pool", [("lazy", 0.0, "batch"), ("dense", 0.0, "batch"),
                                             ("lazy", 0.01, "batch"), ("lazy", 0.01, "sampled"),
                                             ("dense", 0.0, "sampled")])
def test_softmax_step_matches_keras_model_tape_and_sgd(kind, updates, l2, pool):
    users, movies = _rated(seed=2)
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES)
    pools = Pools(sampler, movies, N_MOVIES, 8, BATCH, seed=9, sampled=pool == "sampled")
    rng = np.random.default_rng(4)
    order = rng.permutation(len(users))[:BATCH * STEPS]
    u, m = users[order], movies[order]
    u[: len(u) // 2] %= 5  # rows untouched for several steps: lazy must catch them up
    batches = [(u[s:s + BATCH], m[s:s + BATCH]) for s in range(0, len(u), BATCH)]
    lr, momentum = 0.5, 0.9
    reference = _keras_reference(kind, batches, pools, lr, momentum, l2)

    keras.utils.set_random_seed(11)
    spec = NetSpec(kind, N_USERS, N_MOVIES, 4, 8, objective="softmax")
    model = build_model(spec)
    initial = [w.numpy().copy() for w in model.weights]
    loop = TrainLoop(RowSplitModel(model, spec), BATCH,
                     UpdateRule(learning_rate=lr, momentum=momentum, table_updates=updates,
                                l2_embeddings=l2), pools=pools)
    mean = loop.epoch(tf.constant(u), tf.constant(m), tf.constant(np.zeros(0, np.float32)), 4)
    for ours, theirs, start in zip(model.weights, reference.weights, initial, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=5e-6, err_msg=ours.path)
        if ours.path not in ("user_bias/embeddings", "side_out/bias"):
            # A user's bias and the output bias shift every pool movie's logit alike.
            assert np.abs(ours.numpy() - start).max() > 1e-4, ours.path
    assert np.isfinite(mean) and mean > 0


def test_softmax_learns_a_planted_ranking_and_held_out_loss_falls():
    # Users 0-19 rate only even movies, users 20-39 only odd ones.
    users, movies = planted_parity(N_USERS, N_MOVIES, 6)
    keep = np.unique(users * N_MOVIES + movies, return_index=True)[1]
    users, movies = users[keep], movies[keep]
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES)
    pools = Pools(sampler, movies, N_MOVIES, 6, BATCH, seed=3)
    keras.utils.set_random_seed(2)
    spec = NetSpec("residual", N_USERS, N_MOVIES, 4, 8, objective="softmax")
    loop = TrainLoop(RowSplitModel(build_model(spec), spec), BATCH,
                     UpdateRule(optimizer="adam", table_updates="sparse", learning_rate=0.05),
                     pools=pools)
    before = loop.pooled_loss(tf.constant(users), tf.constant(movies), pools)
    data_rng = np.random.default_rng(1)
    for _ in range(30):
        data = epoch_data("softmax", users, movies, np.zeros(len(users)), data_rng)
        loop.epoch(tf.constant(data.users), tf.constant(data.movies),
                   tf.constant(data.targets), 8)
    assert loop.pooled_loss(tf.constant(users), tf.constant(movies), pools) < 0.8 * before
    assert share_ranked_own_parity_first(loop, N_USERS, N_MOVIES) > 0.9


def test_softmax_needs_its_pools_and_no_dropout():
    spec = NetSpec("mf", N_USERS, N_MOVIES, 4, 8, objective="softmax")
    with pytest.raises(ValueError, match="expected pools for softmax"):
        TrainLoop(RowSplitModel(build_model(spec), spec), BATCH)
    with pytest.raises(ParamsError, match=r"train\.dropout.*0 with objective softmax"):
        TrainParams(objective="softmax", dropout=0.2).validate("train")
