"""``python -m benchmarks.speed ranking``: training with negatives at MovieLens-20M scale.

In one run on one machine, on the full-size twin's train split (the real ingest and preprocess
stages), for each objective (``rating``, ``bce``, ``bpr``) in a fresh process:

1. the epoch's examples: the ratings shuffled (rating), or every rating with ``--negatives``
   sampled negatives (bce: positives + negatives; bpr: triples), timed whole, with the
   sampler's redraw count (draws that hit a rated movie);
2. ``--steps`` training steps at ``--batch`` after ``--warmup`` untimed ones, with the default
   update rule (lazy SGD with momentum): milliseconds per step and examples per second;
3. the time of one epoch: the sampling measured in step 1 plus the steps an epoch holds at the
   measured step time (an epoch is 125k-625k steps at batch 128: extrapolated, and said so);
4. the per-epoch ranking probe (full-catalogue NDCG@10 for ``--probe-users`` sampled users),
   the cost early stopping adds to every epoch.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from benchmarks.speed import _child, _load_split, _peak_mib, _report, _run_stage

OBJECTIVE_ROWS = (("rating", "rating (the tutorial's MSE), the ratings shuffled"),
                  ("bce", "bce, each rating + {n} sampled negatives"),
                  ("bpr", "bpr, {n} (rating, sampled negative) triples per rating"))


def child_ranking_epoch(prepared: str, objective: str, steps: str, warmup: str,
                        negatives: str, batch: str, probe_users: str) -> None:
    """One objective's epoch data, timed steps and probe (prints JSON)."""
    import numpy as np
    import tensorflow as tf

    from movierec.core.config import TrainParams
    from movierec.core.files import read_parquet
    from movierec.nets import scoring
    from movierec.train.negatives import NegativeSampler
    from movierec.train.objectives import epoch_data
    from movierec.train.probes import RankingProbe
    from movierec.train.training import setup

    steps, warmup, negatives, batch = int(steps), int(warmup), int(negatives), int(batch)
    train_df, n_users, n_movies = _load_split(Path(prepared))
    params = TrainParams(objective=objective, negatives=negatives, batch_size=batch)
    centred, loop = setup(params, n_users, n_movies)
    users = train_df["user_idx"].to_numpy()
    movies = train_df["movie_idx"].to_numpy()
    targets = (train_df["rating"].to_numpy(np.float32)
               - np.float32(0 if params.ranks else train_df["rating"].mean()))
    start = time.perf_counter()
    sampler = (NegativeSampler(users, movies, n_users, n_movies, params.negative_sampling)
               if params.ranks else None)
    data = epoch_data(objective, users, movies, targets, np.random.default_rng(0), sampler,
                      negatives)
    sample_s = time.perf_counter() - start
    n = (steps + warmup) * batch
    if n > len(data):
        raise ValueError(f"{steps + warmup} steps need {n:,} examples; an epoch has {len(data):,}")

    def part(a, lo, hi):
        return tf.constant(a[lo:hi]) if len(a) else tf.constant(a)
    cut = warmup * batch
    loop.epoch(*(part(a, 0, cut) for a in (data.users, data.movies, data.targets)),
               params.steps_per_execution, part(data.negatives, 0, cut))
    timed = [part(a, cut, n) for a in (data.users, data.movies, data.targets, data.negatives)]
    start = time.perf_counter()
    loop.epoch(*timed[:3], params.steps_per_execution, timed[3])
    step_s = (time.perf_counter() - start) / steps
    test = read_parquet(Path(prepared) / "test.parquet", columns=["user_idx", "movie_idx"])
    probe = RankingProbe(users, movies, test["user_idx"].to_numpy(),
                         test["movie_idx"].to_numpy(), n_users, n_movies, 10, int(probe_users))
    start = time.perf_counter()
    ndcg = probe.ndcg(scoring.from_model(centred))
    probe_s = time.perf_counter() - start
    print(json.dumps({
        "examples": len(data), "sample_s": sample_s, "step_ms": step_s * 1e3,
        "examples_per_s": batch / step_s, "epoch_s": sample_s + step_s * -(-len(data) // batch),
        "rejected": sampler.stats.rejected if sampler else 0,
        "drawn": sampler.stats.drawn if sampler else 0,
        "probe_s": probe_s, "probe_users": len(probe.users), "ndcg": ndcg,
        "peak_mib": _peak_mib()}))


def bench_ranking(work: Path, n_ratings: int, steps: int, warmup: int, negatives: int,
                  batch: int, probe_users: int) -> None:
    """Prints each objective's figures as they are measured."""
    import yaml

    from movierec.core.config import Params

    defaults = dataclasses.asdict(Params())
    defaults["data"]["synthetic"]["n_ratings"] = n_ratings
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(defaults))
    raw, prep = work / "raw", work / "prepared"
    for folder in (raw, prep, work / "download"):
        folder.mkdir(exist_ok=True)
    if not (prep / "train.parquet").exists():
        print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings, real stages", flush=True)
        _report("ingest", _run_stage("ingest", params, "--download-dir", str(work / "download"),
                                     "--ratings", str(raw / "ratings.parquet"),
                                     "--movies", str(raw / "movies.parquet")))
        _report("preprocess", _run_stage(
            "preprocess", params, "--ratings", str(raw / "ratings.parquet"),
            "--movies", str(raw / "movies.parquet"), "--train", str(prep / "train.parquet"),
            "--test", str(prep / "test.parquet"), "--user-index", str(prep / "users.parquet"),
            "--movie-index", str(prep / "movies.parquet")))
    print(f"\n== one epoch per objective at batch {batch}: examples built and timed whole, "
          f"{steps:,} steps timed after {warmup} untimed (lazy SGD), one process each",
          flush=True)
    rating = None
    for objective, label in OBJECTIVE_ROWS:
        r = _child("child_ranking_epoch", prep, objective, steps, warmup, negatives, batch,
                   probe_users, module=__name__)
        rating = rating or r
        redrawn = (f", {r['rejected']:,} of {r['drawn']:,} draws redrawn "
                   f"({r['rejected'] / r['drawn']:.1%}: a rated movie)" if r["drawn"] else "")
        print(f"{label.format(n=negatives)}: {r['examples']:,} examples per epoch, built in "
              f"{r['sample_s']:.1f} s{redrawn}; {r['step_ms']:.3f} ms/step, "
              f"{r['examples_per_s']:,.0f} examples/s; one epoch about {r['epoch_s']:.0f} s "
              f"(extrapolated; {r['epoch_s'] / rating['epoch_s']:.1f}x the rating epoch); "
              f"NDCG@10 probe of {r['probe_users']:,} users {r['probe_s']:.1f} s; peak "
              f"{r['peak_mib']:,.0f} MiB", flush=True)
