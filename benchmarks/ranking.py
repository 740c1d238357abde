"""``python -m benchmarks ranking``: training with negatives at MovieLens-20M scale.

In one run on one machine, on the full-size twin's train split (the real ingest and preprocess
stages), for each objective (``rating``, ``bce``, ``bpr``) in a fresh process, and for the
project's ``ranking`` configuration (experiments.yaml, the README's ranking command):

1. the epoch's examples: the ratings shuffled (rating, softmax), or every rating with
   ``--negatives`` sampled negatives (bce: positives + negatives; bpr: triples), timed whole,
   with the sampler's redraw count (draws that hit a rated movie);
2. ``--steps`` training steps after ``--warmup`` untimed ones: the objectives at ``--batch``
   with the default update rule (lazy SGD with momentum), the ranking configuration with its
   own batch, rule and pool: milliseconds per step and examples per second;
3. the time of one epoch: the sampling measured in step 1 plus the steps an epoch holds at the
   measured step time (an epoch is 125k-625k steps at batch 128: extrapolated, and said so);
4. the per-epoch ranking probe (full-catalogue NDCG@10 for ``--probe-users`` sampled users),
   the cost early stopping adds to every epoch.

``--set key=value`` (repeatable) adds a row: the ranking configuration with those train keys
changed, measured the same way (another batch or pool, side by side with the others).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import (
    ML20M_RATINGS,
    RANKING,
    Workspace,
    ingest_and_preprocess,
    load_split,
    parse_sets,
    peak_mib,
    print_json,
    ranking_overrides,
    run_child,
    scoring_weights,
    training_loop,
    work_folder,
)

HELP = "an epoch with negatives at ML-20M scale"
OBJECTIVE_ROWS = (("rating", "rating (the tutorial's MSE), the ratings shuffled"),
                  ("bce", "bce, each rating + {n} sampled negatives"),
                  ("bpr", "bpr, {n} (rating, sampled negative) triples per rating"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    for name, default in (("steps", 3_000), ("warmup", 100), ("negatives", 4), ("batch", 128),
                          ("probe-users", 1_000)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train key over the ranking configuration's, for one more row "
                             "(repeatable)")
    # --steps and --warmup count steps of each row's own batch.


def run(args: argparse.Namespace) -> None:
    with work_folder(args.workdir) as work:
        bench_ranking(work, args.n_ratings, args.steps, args.warmup, args.negatives,
                      args.batch, args.probe_users, parse_sets(args.set))


# --- one objective's measurements, in a fresh process (run_child) ----------------------------

def child_ranking_epoch(prepared: str, objective: str, steps: str, warmup: str,
                        negatives: str, batch: str, probe_users: str,
                        changed: str = "{}") -> None:
    """One objective's epoch data, timed steps and probe (prints JSON); ``changed``: JSON of
    train keys over the ranking configuration's."""
    import numpy as np

    from movierec.core.config import TrainParams

    steps, warmup, negatives, batch = int(steps), int(warmup), int(negatives), int(batch)
    train_df, n_users, n_movies = load_split(Path(prepared))
    if objective == RANKING:  # its own batch, rule and pool; epochs and early stopping aside
        params = TrainParams(**{**ranking_overrides(), **json.loads(changed)})
    else:
        params = TrainParams(objective=objective, negatives=negatives, batch_size=batch)
    users = train_df["user_idx"].to_numpy()
    movies = train_df["movie_idx"].to_numpy()
    targets = (train_df["rating"].to_numpy(np.float32)
               - np.float32(0 if params.ranks else train_df["rating"].mean()))
    start = time.perf_counter()
    data, sampler = _epoch_examples(params, users, movies, targets, n_users, n_movies)
    sample_s = time.perf_counter() - start
    centred, loop, spec = training_loop(params, n_users, n_movies, sampler)
    step_s = _step_seconds(loop, data, params, steps, warmup)
    probe = _ranking_probe(Path(prepared), users, movies, n_users, n_movies, int(probe_users))
    start = time.perf_counter()
    ndcg = probe.ndcg(scoring_weights(centred, spec))
    probe_s = time.perf_counter() - start
    print_json({
        "examples": len(data), "sample_s": sample_s, "step_ms": step_s * 1e3,
        "batch": params.batch_size, "examples_per_s": params.batch_size / step_s,
        "epoch_s": sample_s + step_s * -(-len(data) // params.batch_size),
        "rejected": sampler.stats.rejected if sampler else 0,
        "drawn": sampler.stats.drawn if sampler else 0,
        "probe_s": probe_s, "probe_users": len(probe.users), "ndcg": ndcg,
        "peak_mib": peak_mib()})


def _epoch_examples(params, users, movies, targets, n_users: int, n_movies: int) -> tuple:
    """One epoch's examples as the train stage builds them, and the sampler (None for the
    rating objective)."""
    import numpy as np

    from movierec.train.negatives import NegativeSampler
    from movierec.train.objectives import epoch_data

    sampler = (NegativeSampler(users, movies, n_users, n_movies, params.negative_sampling)
               if params.ranks else None)
    data = epoch_data(params.objective, users, movies, targets, np.random.default_rng(0),
                      sampler, params.negatives)
    return data, sampler


def _step_seconds(loop, data, params, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` steps of ``data`` after ``warmup`` untimed ones."""
    import tensorflow as tf

    batch = params.batch_size
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
    return (time.perf_counter() - start) / steps


def _ranking_probe(prepared: Path, users, movies, n_users: int, n_movies: int,
                   probe_users: int):
    """The train stage's per-epoch NDCG@10 probe on ``probe_users`` users of the test split."""
    from movierec.core.files import read_parquet
    from movierec.train.probes import RankingProbe

    test = read_parquet(prepared / "test.parquet", columns=["user_idx", "movie_idx"])
    return RankingProbe(users, movies, test["user_idx"].to_numpy(),
                        test["movie_idx"].to_numpy(), n_users, n_movies, 10, probe_users)


# --- the benchmark --------------------------------------------------------------------------

def bench_ranking(work: Path, n_ratings: int, steps: int, warmup: int, negatives: int,
                  batch: int, probe_users: int, changed: dict | None = None) -> None:
    """Prints each objective's figures as they are measured."""
    space = Workspace.create(work, n_ratings)
    if not space.split("train").exists():
        print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings, real stages", flush=True)
        ingest_and_preprocess(space)
    print(f"\n== one epoch per objective at batch {batch}: examples built and timed whole, "
          f"{steps:,} steps timed after {warmup} untimed (lazy SGD), one process each",
          flush=True)
    rating = None
    ranking = ranking_overrides()
    named = (f"the ranking configuration ({ranking.get('objective', 'rating')}, batch "
             f"{ranking.get('batch_size', batch)}, {ranking.get('negatives', negatives)} "
             "negatives)")
    rows = [(*row, {}) for row in (*OBJECTIVE_ROWS, (RANKING, named))]
    if changed:
        rows.append((RANKING, "the ranking configuration with " + ", ".join(
            f"{k}={v}" for k, v in changed.items()), changed))
    for objective, label, keys in rows:
        r = run_child(__name__, "child_ranking_epoch", space.prepared, objective, steps,
                      warmup, negatives, batch, probe_users, json.dumps(keys))
        rating = rating or r
        print(objective_line(label.format(n=negatives), r, rating), flush=True)


def objective_line(label: str, r: dict, rating: dict) -> str:
    """One objective's figures; ``rating``: the rating objective's, for the epoch ratio."""
    redrawn = (f", {r['rejected']:,} of {r['drawn']:,} draws redrawn "
               f"({r['rejected'] / r['drawn']:.1%}: a rated movie)" if r["drawn"] else "")
    return (f"{label}: {r['examples']:,} examples per epoch, built in "
            f"{r['sample_s']:.1f} s{redrawn}; {r['step_ms']:.3f} ms/step, "
            f"{r['examples_per_s']:,.0f} examples/s; one epoch about {r['epoch_s']:.0f} s "
            f"(extrapolated; {r['epoch_s'] / rating['epoch_s']:.1f}x the rating epoch); "
            f"NDCG@10 probe of {r['probe_users']:,} users {r['probe_s']:.1f} s; peak "
            f"{r['peak_mib']:,.0f} MiB")

