"""The softmax steps on the host (``host_steps``) against TrainLoop's TensorFlow step: the same
pools, the same weights, optimiser state and losses after whole epochs, for every network,
every kind of pool and both L2 penalties; and which loops take the host path."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.nets import rated_per_user

from movierec.nets.keras_model import build_model
from movierec.nets.spec import NetSpec
from movierec.train.host_steps import runs_on_host
from movierec.train.negatives import NegativeSampler
from movierec.train.objectives import epoch_data
from movierec.train.pools import Pools
from movierec.train.row_split import RowSplitModel
from movierec.train.rules import UpdateRule
from movierec.train.steps import TrainLoop

N_USERS, N_MOVIES, BATCH = 40, 30, 16
# A user's bias and the output bias shift all of a softmax's logits alike: their gradient is
# zero but for rounding, which Adam scales up to steps of the learning rate; those weights
# (and their moments) follow the rounding of each path and are not compared.
# Adam scales rounding up elsewhere too (where a moment is small): the tolerance is 1e-4, where
# a wrong gradient moves a weight by about the learning rate.
NOISE = ("user_bias/embeddings", "side_out/bias")
ADAM = UpdateRule(optimizer="adam", table_updates="sparse", learning_rate=0.05,
                  l2_embeddings=0.02, l2_dense=0.01)


def _rated(seed=0, per_user=6):
    return rated_per_user(N_USERS, N_MOVIES, seed, per_user)


def _pools(pool: str, users, movies) -> Pools:
    sampler = NegativeSampler(users, movies, N_USERS, N_MOVIES, "popularity")
    negatives = 1000 if pool == "full" else 8
    return Pools(sampler, movies, N_MOVIES, negatives, BATCH, seed=5,
                 sampled=pool == "sampled", batch_negatives=6)


def _loop(kind, pools, rule=ADAM, kernel="numba", host=True) -> TrainLoop:
    keras.utils.set_random_seed(3)
    spec = NetSpec(kind, N_USERS, N_MOVIES, 4, 8, objective="softmax")
    loop = TrainLoop(RowSplitModel(build_model(spec), spec), BATCH, rule, pools=pools,
                     pair_kernel=kernel, pair_threads=2)
    if not host:
        loop.host = None  # the TensorFlow step, as every other loop runs
    return loop


@pytest.mark.parametrize("pool", ["batch", "sampled", "full"])
@pytest.mark.parametrize("kind", ["residual", "mf", "deep"])
def test_host_steps_train_what_the_tensorflow_step_trains(kind, pool):
    users, movies = _rated()
    pools = _pools(pool, users, movies)
    assert pools.full == (pool == "full")
    loops = [_loop(kind, pools), _loop(kind, pools, host=False)]
    assert loops[0].host is not None and loops[1].host is None
    rng = np.random.default_rng(1)
    for _ in range(2):  # 240 examples: 15 batches of 16, the last one smaller after a cut
        data = epoch_data("softmax", users, movies, np.zeros(len(users)), rng)
        cut = len(data.users) - 5
        args = [tf.constant(a[:cut]) for a in (data.users, data.movies, data.targets)]
        means = [loop.epoch(*args, 4) for loop in loops]
        np.testing.assert_allclose(means[0], means[1], rtol=1e-5)
        for ours, theirs in zip(*(loop.split.model.weights for loop in loops), strict=True):
            if ours.path not in NOISE:
                np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4,
                                           err_msg=ours.path)
        assert int(loops[0].step.numpy()) == int(loops[1].step.numpy())
        k = loops[0].split.spec.latent_dim  # the user rows' embedding columns, not the bias
        for f, width in enumerate((k, None)):
            for ours, theirs in zip(*(loop.table_slots[f] for loop in loops), strict=True):
                np.testing.assert_allclose(ours.numpy()[:, :width], theirs.numpy()[:, :width],
                                           atol=1e-4, rtol=1e-3)
        names = [name for name, _ in loops[0].split.spec.dense]
        for name, *slots in zip(names, *(loop.dense_slots for loop in loops), strict=True):
            if name != "side_out/bias":
                for ours, theirs in zip(*slots, strict=True):
                    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4,
                                               rtol=1e-3, err_msg=name)
    start = _loop(kind, pools).split.model.weights
    moved = [np.abs(w.numpy() - s.numpy()).max()
             for w, s in zip(loops[0].split.model.weights, start, strict=True)]
    assert max(moved) > 1e-2


def test_pull_takes_restored_state_and_push_gives_it_back():
    users, movies = _rated()
    loop = _loop("residual", _pools("batch", users, movies))
    loop.step.assign(17)
    loop.table_slots[1][0].assign(tf.fill(loop.table_slots[1][0].shape, 0.25))
    loop.split.dense[0].assign(tf.ones_like(loop.split.dense[0]))  # the Keras model's weight
    loop.pull()
    host = loop.host
    assert host.step == 17 and (host.slots[1][0] == 0.25).all() and (host.dense[0] == 1).all()
    host.step, host.slots[1][0][:] = 40, 0.5
    host.push()
    assert int(loop.step.numpy()) == 40 and (loop.table_slots[1][0].numpy() == 0.5).all()


@pytest.mark.parametrize("pool", ["batch", "sampled"])
def test_host_pool_is_the_tensorflow_pool(pool):
    users, movies = _rated(seed=2)
    pools = _pools(pool, users, movies)
    draws = pools.draws(3, 4)
    for i, step in enumerate(range(3, 7)):
        positives = movies[i * BATCH:(i + 1) * BATCH]
        got = pools.host_pool(positives, draws[i])
        if pool == "sampled":
            expected = pools.sampled_pool(tf.constant(positives), tf.constant(step, tf.int64))
        else:
            p, c, q = pools.pool(tf.constant(positives), tf.constant(step, tf.int64))
            expected = (p, c, None, q)
        for a, b in zip(got, expected, strict=True):
            if b is None:
                assert a is None
            else:
                np.testing.assert_array_equal(a, b.numpy())


def test_first_unique_is_tf_unique_and_leaves_its_scratch_clean():
    values = np.random.default_rng(0).integers(0, 50, 200).astype(np.int32)
    seen = np.full(50, -1, np.int32)
    distinct, where = Pools.first_unique(values, seen)
    expected, expected_where = tf.unique(tf.constant(values))
    np.testing.assert_array_equal(distinct, expected.numpy())
    np.testing.assert_array_equal(where, expected_where.numpy())
    assert (seen == -1).all()


def test_only_the_cpu_kernel_with_lazy_adam_on_one_device_runs_on_the_host():
    users, movies = _rated()
    pools = _pools("batch", users, movies)
    assert runs_on_host(_loop("residual", pools))
    assert not runs_on_host(_loop("residual", pools, kernel="tensorflow"))
    assert not runs_on_host(_loop("residual", pools, UpdateRule(table_updates="sparse")))
    assert not runs_on_host(_loop("residual", pools,
                                  UpdateRule(optimizer="adam", table_updates="dense")))
