"""Run by tests/train/test_mirrored.py and test_multi_worker_loop.py in a fresh Python (a
strategy and logical devices can only be set up before TensorFlow starts): trains the loop for
a few epochs under a strategy and saves the weights and, per variable, how far the replicas'
copies are apart.

    python tests/support/distributed_child.py STRATEGY CPU_REPLICAS OBJECTIVES OUT.npz [KEY=VAL ...]

OBJECTIVES is one objective or a comma list (``softmax-sampled``: softmax with
``train.pool=sampled``, a quarter of the batch's positives shared as negatives), trained one
after the other in this process (each from its own seeded start); with several, each one's
weights go to OUT-<objective>.npz, and each prints its own report line.

With ``multi_worker`` it is one task of the cluster in ``TF_CONFIG`` (the chief or a worker, as
TF_CONFIG says); a lost cluster ends it with one ``error:`` line. Options: ``batch_size``,
``steps_per_execution`` (default 64), ``epochs`` (default 2), ``hidden_units`` (default 400),
``n_ratings`` (of the synthetic twin, default 20,000), ``collective_timeout``, ``threads_at``
(comma-separated step counts: the report's ``threads`` gives this process's OS threads after
the first call into the training loop that reaches each) and ``stall_at`` (a step count: this
task then stops taking part, alive, for 10 minutes, as a task stuck outside TensorFlow would).
"""

import dataclasses
import json
import os
import sys
import time

import numpy as np


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main(strategy: str, cpu_replicas: str, objectives: str, out: str, *options: str) -> None:
    opts = dict(o.split("=", 1) for o in options)
    from movierec.core.config import TrainParams
    from movierec.data import synthetic
    from movierec.data.preprocess import prepare
    from movierec.train import distribute
    from movierec.train.tf_config import is_chief_task, read_tf_config

    names = objectives.split(",")
    params = dataclasses.replace(TrainParams(), strategy=strategy,
                                 cpu_replicas=int(cpu_replicas), objective=names[0],
                                 steps_per_execution=int(opts.get("steps_per_execution", 64)),
                                 batch_size=int(opts.get("batch_size", 128)),
                                 hidden_units=int(opts.get("hidden_units", 400)),
                                 collective_timeout=int(opts.get("collective_timeout", 300)))
    role = "chief"
    if strategy == "multi_worker" and not is_chief_task(read_tf_config()):
        role = "worker"
    place = distribute.start(params, role=role)
    twin = synthetic.generate(int(opts.get("n_ratings", 20_000)), seed=5)
    data = prepare(twin.ratings, twin.movies, 0.2, 1)
    for objective in names:
        # One process trains each objective in turn: the strategy is set up once per process.
        path = out if len(names) == 1 else out.replace(".npz", f"-{objective}.npz")
        name, _, pool = objective.partition("-")
        report = _train(dataclasses.replace(params, objective=name, pool=pool or "batch",
                                            batch_negatives=params.batch_size // 4 if pool else 0),
                        place, data, opts, path)
        print(json.dumps({"objective": objective, **report}), flush=True)


def _train(params, place, data, opts: dict, out: str) -> dict:
    """Trains the loop under ``place`` for a few epochs; saves the weights to ``out`` and
    returns the report (replicas, steps, how far the replicas' copies are apart, ...)."""
    import tensorflow as tf

    from movierec.train import distribute
    from movierec.train.negatives import NegativeSampler
    from movierec.train.objectives import epoch_data
    from movierec.train.training import setup

    objective = params.objective
    n_users, n_movies = len(data.users), len(data.movies)
    users = data.train["user_idx"].to_numpy()
    movies = data.train["movie_idx"].to_numpy()
    targets = (data.train["rating"].to_numpy(np.float32) - np.float32(3.5))
    sampler = (NegativeSampler(users, movies, n_users, n_movies, "uniform")
               if params.ranks else None)
    model, loop = setup(params, n_users, n_movies, place, sampler)
    rng = np.random.default_rng(0)
    steps = 0
    marks = [int(m) for m in opts.get("threads_at", "").split(",") if m]
    threads = {}

    def on_steps(count: int) -> None:
        nonlocal steps
        steps += count
        while marks and steps >= marks[0]:
            threads[marks.pop(0)] = {"steps": steps, "threads": _threads()}
        if "stall_at" in opts and steps >= int(opts["stall_at"]):
            print(f"stalling after {steps} steps", flush=True)
            time.sleep(600)
    examples, tick = 0, time.perf_counter()
    try:
        with distribute.cluster_errors(place, "child"):
            for _ in range(int(opts.get("epochs", 2))):
                batch = epoch_data(objective, users, movies, targets, rng, sampler,
                                   params.negatives)
                examples += len(batch)
                loop.epoch(tf.constant(batch.users), tf.constant(batch.movies),
                           tf.constant(batch.targets), params.steps_per_execution,
                           tf.constant(batch.negatives), on_steps=on_steps)
    except distribute.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    seconds = time.perf_counter() - tick
    spread = {}
    variables = (loop.tables + loop.dense + [s for g in loop.table_slots + loop.dense_slots
                                             for s in g] + [loop.step, *loop.row_step])
    for i, var in enumerate(variables):
        copies = [np.asarray(c.numpy(), np.float64) for c in getattr(var, "values", [var])]
        spread[str(i)] = max(float(np.max(np.abs(c - copies[0]))) for c in copies)
    np.savez(out, *[w.numpy() for w in model.weights])
    return {"replicas": loop.replicas, "steps": steps, "spread": spread,
            "copies": len(getattr(loop.tables[0], "values", [0])), "chief": place.is_chief,
            "threads": threads, "samples_per_second": examples / seconds}




if __name__ == "__main__":
    main(*sys.argv[1:])
