"""``python -m benchmarks recommend``: the recommend stage at MovieLens-20M scale.

In one run on one machine:

1. the real ingest, preprocess and train stages on the full-size twin (train: ``--epochs``,
   default 1; the scorer's cost depends on the table sizes, not on how long the model trained);
2. the real recommend stage, exact (``recommend.candidates: 0``), with its time, peak memory
   and breakdown (load, score, select);
3. the same scores computed by a fused XLA block scorer, ``tf.function(jit_compile=True)`` on
   ``elu(U[b] + V[m]) . w2`` (the floor a compiled general-purpose scorer sets), and by the
   stage's kernel, on the same users, side by side: evaluations per second and their ratio;
4. the recommend stage with ``recommend.candidates`` = each of ``--candidates``: time, and how
   often each user's top 10 equals the exact one;
5. the ``recommend`` command's per-user latency after loading (median and 95th percentile).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    ML20M_RATINGS,
    Workspace,
    report,
    saved_scoring_weights,
    trained_model,
    work_folder,
)

HELP = "the recommend stage at ML-20M scale"
XLA_BLOCK = 16  # users per XLA call; the stage's kernel is timed on the same blocks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    parser.add_argument("--epochs", type=int, default=1,
                        help="train epochs for the scored model")
    parser.add_argument("--candidates", type=int, nargs="*", default=[100, 300, 1000])
    parser.add_argument("--xla-blocks", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")


def run(args: argparse.Namespace) -> None:
    with work_folder(args.workdir) as work:
        bench_recommend(work, args.n_ratings, args.epochs, args.candidates, args.xla_blocks,
                        args.queries)


# --- measurements (in this process) ---------------------------------------------------------

def _time_side_branch(model_path: Path, n_users: int, n_blocks: int) -> dict:
    """Evaluations per second of the side branch: the stage's kernel and an XLA scorer."""
    import tensorflow as tf

    weights = saved_scoring_weights(model_path)
    rng = np.random.default_rng(0)
    blocks = [rng.choice(n_users, XLA_BLOCK, replace=False) for _ in range(n_blocks)]
    v = tf.constant(weights.movie_hidden)  # (M, H)
    w2 = tf.constant(weights.w2)

    @tf.function(jit_compile=True)
    def xla_side(u_hidden):
        return tf.reduce_sum(tf.nn.elu(u_hidden[:, None, :] + v[None, :, :]) * w2, axis=-1)

    xla_side(tf.constant(weights.user_hidden(blocks[0]))).numpy()  # compile
    start = time.perf_counter()
    xla_out = [xla_side(tf.constant(weights.user_hidden(b))).numpy() for b in blocks]
    xla_s = time.perf_counter() - start
    ours, ours_s = _time_kernel(weights, blocks)
    block_s = _time_kernel_in_stage_blocks(weights, np.concatenate(blocks))
    # The stage's kernel folds elu's "-1" into a per-movie constant: add it back to compare.
    diff = max(float(np.abs(o - weights.w2.sum() - x).max()) for o, x in zip(ours, xla_out,
                                                                             strict=True))
    evals = XLA_BLOCK * weights.n_movies * weights.w2.size
    total = evals * n_blocks
    return {"xla_evals_per_s": total / xla_s, "ours_evals_per_s": total / ours_s,
            "ours_block_evals_per_s": total / block_s,
            "max_abs_diff": diff, "evals_per_block": evals}


def _time_kernel(weights, blocks: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """The stage's kernel on each block of XLA_BLOCK users: the scores and the seconds."""
    from movierec.nets import scoring

    out = np.zeros((XLA_BLOCK, weights.n_movies), np.float32)
    scoring.side_branch(weights, blocks[0], out)  # compile (cached) and warm
    start = time.perf_counter()
    ours = []
    for b in blocks:
        out = np.zeros((XLA_BLOCK, weights.n_movies), np.float32)
        scoring.side_branch(weights, b, out)
        ours.append(out)
    return ours, time.perf_counter() - start


def _time_kernel_in_stage_blocks(weights, users: np.ndarray) -> float:
    """Seconds for the same users in the stage's blocks of BLOCK_USERS: each cached movie tile
    serves more users."""
    from movierec.nets import scoring
    from movierec.ranking.topn import BLOCK_USERS

    start = time.perf_counter()
    for i in range(0, len(users), BLOCK_USERS):
        chunk = users[i: i + BLOCK_USERS]
        scoring.side_branch(weights, chunk, np.zeros((len(chunk), weights.n_movies), np.float32))
    return time.perf_counter() - start


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


# --- the benchmark's parts, each printing its figures as they are measured --------------------

def bench_recommend(work: Path, n_ratings: int, epochs: int, candidates: list[int],
                    xla_blocks: int, queries: int) -> None:
    """Runs the five parts in the module docstring's order, printing every figure."""
    space = Workspace.create(work, n_ratings, epochs=epochs)
    trained_model(space, n_ratings, epochs)
    print("\n== recommend stage, exact scores (recommend.candidates: 0)", flush=True)
    exact = recommend_stage(space, 0, "top_n_exact.parquet")
    report("recommend, exact", exact)
    side_branch(space, exact, xla_blocks)
    with_candidates(space, exact, candidates)
    command_latency(space, queries)


def recommend_stage(space: Workspace, candidates: int, name: str) -> dict:
    """The real recommend stage with ``recommend.candidates`` = ``candidates``."""
    space.set_params("recommend", candidates=candidates)
    return space.recommend(space.out / name)


def side_branch(space: Workspace, exact: dict, xla_blocks: int) -> None:
    """Part 3: the stage's kernel and an XLA scorer side by side, against the exact stage."""
    from movierec.core.files import read_parquet

    print(f"\n== side branch alone, {xla_blocks} blocks of {XLA_BLOCK} users against every "
          "movie, side by side", flush=True)
    n_users = len(read_parquet(space.split("users")))
    side = _time_side_branch(space.model, n_users, xla_blocks)
    total = n_users * side["evals_per_block"] / XLA_BLOCK
    print("\n".join(side_branch_lines(side, exact, total)), flush=True)


def side_branch_lines(side: dict, exact: dict, total: float) -> list[str]:
    """``total``: the side branch's evaluations for every user."""
    from movierec.ranking.topn import BLOCK_USERS

    xla, ours, block = (side[k] for k in ("xla_evals_per_s", "ours_evals_per_s",
                                          "ours_block_evals_per_s"))
    return [
        f"XLA block scorer (tf.function(jit_compile=True)): {xla / 1e9:.2f}"
        f" x 10^9 evaluations/s, {total / xla / 60:.1f} min for every user",
        f"the stage's kernel (numba): {ours / 1e9:.2f} x 10^9 "
        f"evaluations/s, {total / ours / 60:.1f} min for every user; "
        f"{ours / xla:.1f}x the XLA scorer; "
        f"largest difference in a score {side['max_abs_diff']:.1e}",
        f"the stage's kernel on the same users in blocks of {BLOCK_USERS}: "
        f"{block / 1e9:.2f} x 10^9 evaluations/s, {block / xla:.1f}x the XLA scorer",
        f"the whole exact stage: {exact['seconds']:.0f} s "
        f"({total / exact['seconds'] / 1e9:.2f} x 10^9 side-branch evaluations/s overall) "
        f"against {total / xla:.0f} s for the XLA scorer's side branch alone "
        f"({total / xla / exact['seconds']:.2f}x)",
    ]


def with_candidates(space: Workspace, exact: dict, candidates: list[int]) -> None:
    """Part 4: the stage with each number of candidates, against its exact top 10."""
    print("\n== recommend stage with candidates retrieved by the dot-product branch", flush=True)
    for c in candidates:
        run = recommend_stage(space, c, f"top_n_c{c}.parquet")
        identical, overlap = _same_top(space.out / "top_n_exact.parquet",
                                       space.out / f"top_n_c{c}.parquet")
        print(f"candidates {c}: {run['seconds']:.1f} s ({exact['seconds'] / run['seconds']:.1f}x "
              f"faster than exact), peak memory {run['peak_mib']:,} MiB; top 10 identical to "
              f"the exact top 10 for {identical:.1%} of users, {overlap:.1%} of the exact top 10 "
              "found", flush=True)


def command_latency(space: Workspace, queries: int) -> None:
    """Part 5: the ``recommend`` command's time per user after loading."""
    print(f"\n== the recommend command: {queries} users, one at a time, after loading", flush=True)
    lat = _query_latency(space.served_paths(), queries)
    print(f"load {lat['load_s']:.1f} s; per user: median {lat['median_ms']:.1f} ms, "
          f"95th percentile {lat['p95_ms']:.1f} ms")
