"""``python -m benchmarks.speed recommend``: the recommend stage at MovieLens-20M scale.

In one run on one machine:

1. the real ingest, preprocess and train stages on the full-size twin (train: ``--epochs``,
   default 1; the scorer's cost depends on the table sizes, not on how long the model trained);
2. the real recommend stage, exact (``recommend.candidates: 0``), with its time, peak memory
   and breakdown (load, score, select);
3. the same scores computed by a fused XLA block scorer, ``tf.function(jit_compile=True)`` on
   ``elu(U[b] + V[m]) . w2`` (the floor named in the project's issue 11), and by the stage's
   kernel, on the same users, side by side: evaluations per second and their ratio;
4. the recommend stage with ``recommend.candidates`` = each of ``--candidates``: time, and how
   often each user's top 10 equals the exact one;
5. the ``recommend`` command's per-user latency after loading (median and 95th percentile).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.speed import _report, _run_stage
from movierec.core.files import read_parquet
from movierec.ranking.topn import BLOCK_USERS

XLA_BLOCK = 16  # users per XLA call, as in the probe


def _time_side_branch(model_path: Path, n_users: int, n_blocks: int) -> dict:
    """Evaluations per second of the side branch: the stage's kernel and an XLA scorer."""
    import tensorflow as tf

    from movierec.nets import scoring
    from movierec.nets.keras_model import load_model

    weights = scoring.from_model(load_model(model_path))
    rng = np.random.default_rng(0)
    blocks = [rng.choice(n_users, XLA_BLOCK, replace=False) for _ in range(n_blocks)]
    v = tf.constant(weights.movie_hidden)  # (M, H)
    w2 = tf.constant(weights.w2)

    @tf.function(jit_compile=True)
    def xla_side(u_hidden):
        return tf.reduce_sum(tf.nn.elu(u_hidden[:, None, :] + v[None, :, :]) * w2, axis=-1)

    evals = XLA_BLOCK * weights.n_movies * weights.w2.size
    xla_side(tf.constant(weights.user_hidden(blocks[0]))).numpy()  # compile
    start = time.perf_counter()
    xla_out = [xla_side(tf.constant(weights.user_hidden(b))).numpy() for b in blocks]
    xla_s = time.perf_counter() - start
    out = np.zeros((XLA_BLOCK, weights.n_movies), np.float32)
    scoring.side_branch(weights, blocks[0], out)  # compile (cached) and warm
    start = time.perf_counter()
    ours = []
    for b in blocks:
        out = np.zeros((XLA_BLOCK, weights.n_movies), np.float32)
        scoring.side_branch(weights, b, out)
        ours.append(out)
    ours_s = time.perf_counter() - start
    # The same users in the stage's blocks of BLOCK_USERS: each cached movie tile serves more.
    users = np.concatenate(blocks)
    start = time.perf_counter()
    for i in range(0, len(users), BLOCK_USERS):
        chunk = users[i: i + BLOCK_USERS]
        scoring.side_branch(weights, chunk, np.zeros((len(chunk), weights.n_movies), np.float32))
    block_s = time.perf_counter() - start
    # The stage's kernel folds elu's "-1" into a per-movie constant: add it back to compare.
    diff = max(float(np.abs(o - weights.w2.sum() - x).max()) for o, x in zip(ours, xla_out,
                                                                             strict=True))
    total = evals * n_blocks
    return {"xla_evals_per_s": total / xla_s, "ours_evals_per_s": total / ours_s,
            "ours_block_evals_per_s": total / block_s,
            "max_abs_diff": diff, "evals_per_block": evals}


def _query_latency(root_paths: dict, n_queries: int) -> dict:
    from movierec.serve.query import Recommender

    start = time.perf_counter()
    rec = Recommender.load(root_paths)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    users = rng.choice(rec.known_users, n_queries, replace=False)
    rec.recommend(int(users[0]), 10)  # warm
    times = []
    for u in users:
        t = time.perf_counter()
        rec.recommend(int(u), 10)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"load_s": load_s, "median_ms": statistics.median(times) * 1e3,
            "p95_ms": times[int(0.95 * (len(times) - 1))] * 1e3}


def _same_top(exact: Path, approx: Path, k: int = 10) -> tuple[float, float]:
    """Share of users whose top k lists are identical (same movies, same order), and the mean
    share of the exact top k that the approximate list holds."""
    import pandas as pd

    a = pd.read_parquet(exact).query(f"rank <= {k}").sort_values(["userId", "rank"])
    b = pd.read_parquet(approx).query(f"rank <= {k}").sort_values(["userId", "rank"])
    la = a.groupby("userId")["movieId"].apply(tuple)
    lb = b.groupby("userId")["movieId"].apply(tuple).reindex(la.index)
    identical = float(np.mean([x == y for x, y in zip(la, lb, strict=True)]))
    overlap = float(np.mean([len(set(x) & set(y or ())) / len(x) for x, y in zip(la, lb,
                                                                                  strict=True)]))
    return identical, overlap


def bench_recommend(work: Path, n_ratings: int, epochs: int, candidates: list[int],
                    xla_blocks: int, queries: int) -> None:
    import yaml

    from movierec.core.config import Params

    defaults = dataclasses.asdict(Params())
    defaults["data"]["synthetic"]["n_ratings"] = n_ratings
    defaults["train"]["epochs"] = epochs
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(defaults))
    d = {name: work / name for name in ("download", "raw", "prepared", "models", "out")}
    for folder in d.values():
        folder.mkdir(exist_ok=True)
    raw, prep, out = d["raw"], d["prepared"], d["out"]
    paths = {"model": d["models"] / "model.keras", "train": prep / "train.parquet",
             "user_index": prep / "users.parquet", "movie_index": prep / "movies.parquet"}

    print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings; the model of {epochs} epoch(s) "
          "of the tutorial's defaults", flush=True)
    if not paths["model"].is_file():
        _report("ingest", _run_stage("ingest", params, "--download-dir", str(d["download"]),
                                     "--ratings", str(raw / "ratings.parquet"),
                                     "--movies", str(raw / "movies.parquet")))
        _report("preprocess", _run_stage(
            "preprocess", params, "--ratings", str(raw / "ratings.parquet"),
            "--movies", str(raw / "movies.parquet"), "--train", str(paths["train"]),
            "--test", str(prep / "test.parquet"), "--user-index", str(paths["user_index"]),
            "--movie-index", str(paths["movie_index"])))
        _report("train", _run_stage(
            "train", params, "--train", str(paths["train"]), "--test",
            str(prep / "test.parquet"), "--user-index", str(paths["user_index"]),
            "--movie-index", str(paths["movie_index"]), "--model", str(paths["model"]),
            "--live", str(out / "live"), "--metrics", str(out / "train.json")))
    else:
        print(f"(reusing the model and split in {work})")

    def recommend(c: int, name: str) -> dict:
        defaults["recommend"]["candidates"] = c
        params.write_text(yaml.safe_dump(defaults))
        return _run_stage("recommend", params, "--model", str(paths["model"]),
                          "--train", str(paths["train"]), "--user-index",
                          str(paths["user_index"]), "--movie-index", str(paths["movie_index"]),
                          "--out", str(out / name))

    print("\n== recommend stage, exact scores (recommend.candidates: 0)", flush=True)
    exact = recommend(0, "top_n_exact.parquet")
    _report("recommend, exact", exact)

    print(f"\n== side branch alone, {xla_blocks} blocks of {XLA_BLOCK} users against every "
          "movie, side by side", flush=True)
    n_users = len(read_parquet(paths["user_index"]))
    side = _time_side_branch(paths["model"], n_users, xla_blocks)
    total = n_users * side["evals_per_block"] / XLA_BLOCK
    print(f"XLA block scorer (tf.function(jit_compile=True)): {side['xla_evals_per_s'] / 1e9:.2f}"
          f" x 10^9 evaluations/s, {total / side['xla_evals_per_s'] / 60:.1f} min for every user")
    print(f"the stage's kernel (numba): {side['ours_evals_per_s'] / 1e9:.2f} x 10^9 "
          f"evaluations/s, {total / side['ours_evals_per_s'] / 60:.1f} min for every user; "
          f"{side['ours_evals_per_s'] / side['xla_evals_per_s']:.1f}x the XLA scorer; "
          f"largest difference in a score {side['max_abs_diff']:.1e}")
    print(f"the stage's kernel on the same users in blocks of {BLOCK_USERS}: "
          f"{side['ours_block_evals_per_s'] / 1e9:.2f} x 10^9 evaluations/s, "
          f"{side['ours_block_evals_per_s'] / side['xla_evals_per_s']:.1f}x the XLA scorer")
    print(f"the whole exact stage: {exact['seconds']:.0f} s "
          f"({total / exact['seconds'] / 1e9:.2f} x 10^9 side-branch evaluations/s overall) "
          "against "
          f"{total / side['xla_evals_per_s']:.0f} s for the XLA scorer's side branch alone "
          f"({total / side['xla_evals_per_s'] / exact['seconds']:.2f}x)", flush=True)

    print("\n== recommend stage with candidates retrieved by the dot-product branch", flush=True)
    for c in candidates:
        run = recommend(c, f"top_n_c{c}.parquet")
        identical, overlap = _same_top(out / "top_n_exact.parquet", out / f"top_n_c{c}.parquet")
        print(f"candidates {c}: {run['seconds']:.1f} s ({exact['seconds'] / run['seconds']:.1f}x "
              f"faster than exact), peak memory {run['peak_mib']:,} MiB; top 10 identical to "
              f"the exact top 10 for {identical:.1%} of users, {overlap:.1%} of the exact top 10 "
              "found", flush=True)

    print(f"\n== the recommend command: {queries} users, one at a time, after loading", flush=True)
    lat = _query_latency(paths, queries)
    print(f"load {lat['load_s']:.1f} s; per user: median {lat['median_ms']:.1f} ms, "
          f"95th percentile {lat['p95_ms']:.1f} ms")
