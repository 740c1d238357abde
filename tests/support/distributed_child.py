"""Run by tests/test_distribute.py in a fresh Python (a strategy and logical devices can only
be set up before TensorFlow starts): trains the loop for a few epochs under a strategy and
saves the weights and, per variable, how far the replicas' copies are apart.

    python tests/support/distributed_child.py STRATEGY CPU_REPLICAS OBJECTIVE OUT.npz
"""

import dataclasses
import json
import sys

import numpy as np


def main(strategy: str, cpu_replicas: str, objective: str, out: str) -> None:
    from movierec.core.config import TrainParams
    from movierec.data import synthetic
    from movierec.data.preprocess import prepare
    from movierec.train import distribute
    from movierec.train.negatives import NegativeSampler
    from movierec.train.objectives import epoch_data

    params = dataclasses.replace(TrainParams(), strategy=strategy,
                                 cpu_replicas=int(cpu_replicas), objective=objective,
                                 steps_per_execution=64)
    place = distribute.start(params)
    import tensorflow as tf

    from movierec.train.training import setup

    twin = synthetic.generate(20_000, seed=5)
    data = prepare(twin.ratings, twin.movies, 0.2, 1)
    n_users, n_movies = len(data.users), len(data.movies)
    users = data.train["user_idx"].to_numpy()
    movies = data.train["movie_idx"].to_numpy()
    targets = (data.train["rating"].to_numpy(np.float32) - np.float32(3.5))
    sampler = (NegativeSampler(users, movies, n_users, n_movies, "uniform")
               if params.ranks else None)
    model, loop = setup(params, n_users, n_movies, place)
    rng = np.random.default_rng(0)
    steps = 0
    for _ in range(2):
        batch = epoch_data(objective, users, movies, targets, rng, sampler, params.negatives)
        loop.epoch(tf.constant(batch.users), tf.constant(batch.movies),
                   tf.constant(batch.targets), params.steps_per_execution,
                   tf.constant(batch.negatives))
        steps += -(-len(batch) // params.batch_size)
    spread = {}
    variables = (loop.tables + loop.dense + [s for g in loop.table_slots + loop.dense_slots
                                             for s in g] + [loop.step, *loop.row_step])
    for i, var in enumerate(variables):
        copies = [np.asarray(c.numpy(), np.float64) for c in getattr(var, "values", [var])]
        spread[str(i)] = max(float(np.max(np.abs(c - copies[0]))) for c in copies)
    np.savez(out, *[w.numpy() for w in model.weights])
    print(json.dumps({"replicas": loop.replicas, "steps": steps, "spread": spread,
                      "copies": len(getattr(loop.tables[0], "values", [0]))}))


if __name__ == "__main__":
    main(*sys.argv[1:])
