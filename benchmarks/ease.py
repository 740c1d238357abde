"""``python -m benchmarks ease``: the EASE baseline of the evaluate stage at MovieLens-20M scale.

In one run on one machine, on the full-size twin's split (the real ingest and preprocess
stages), in a fresh process each:

1. EASE as the evaluate stage runs it with the project's defaults (``evaluate.ease_*``): the
   lambda grid on a hold-out of the train split, then the fit on the whole train split with the
   chosen lambda and the top-k lists of every test user; seconds per part, peak memory, and
   NDCG@k beside the most-popular list's;
2. what restricting EASE to the most-rated movies costs: the chosen lambda fitted with each
   ``--compare-items`` (0 = every movie of the train split), NDCG@k, time and peak memory each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import (
    ML20M_RATINGS,
    Workspace,
    ingest_and_preprocess,
    peak_mib,
    print_json,
    run_child,
    work_folder,
)

HELP = "the EASE baseline at ML-20M scale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from movierec.core.config import EvaluateParams

    defaults = EvaluateParams()
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    parser.add_argument("--lambdas", default=",".join(f"{v:g}" for v in defaults.ease_lambda),
                        help="the grid (evaluate.ease_lambda)")
    parser.add_argument("--max-items", type=int, default=defaults.ease_max_items)
    parser.add_argument("--holdout-users", type=int, default=defaults.ease_holdout_users)
    parser.add_argument("--compare-items", default="5000,15000,20000",
                        help="other evaluate.ease_max_items to fit with the chosen lambda "
                             "(comma-separated, at most 20000; 0 = every movie of a smaller "
                             "catalogue; empty = none)")
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")


def run(args: argparse.Namespace) -> None:
    with work_folder(args.workdir) as work:
        bench_ease(work, args.n_ratings, args.lambdas, args.max_items, args.holdout_users,
                   [int(v) for v in args.compare_items.split(",") if v])


def child_ease(prepared: str, lambdas: str, max_items: str, holdout_users: str) -> None:
    """EASE as the evaluate stage runs it, on the test users of ``prepared`` (prints JSON)."""
    from movierec.core.config import EvaluateParams
    from movierec.core.files import read_parquet
    from movierec.data import sparse
    from movierec.evaluate.ease import Timings, ease_lists
    from movierec.ranking import metrics as ranking
    from movierec.ranking.protocol import evaluation_users

    params = EvaluateParams()
    folder = Path(prepared)
    train = read_parquet(folder / "train.parquet", columns=["user_idx", "movie_idx"])
    test = read_parquet(folder / "test.parquet", columns=["user_idx", "movie_idx"])
    n_users = len(read_parquet(folder / "users.parquet", columns=["user_idx"]))
    n_movies = len(read_parquet(folder / "movies.parquet", columns=["movie_idx"]))
    t_csr = sparse.csr_by_user(train["user_idx"].to_numpy(), train["movie_idx"].to_numpy(),
                               n_users)
    r_csr = sparse.csr_by_user(test["user_idx"].to_numpy(), test["movie_idx"].to_numpy(),
                               n_users)
    users, _ = evaluation_users(t_csr[0], r_csr[0], test["user_idx"].to_numpy(), 0, 0)
    before = peak_mib()
    timings = Timings()
    start = time.perf_counter()
    grid = tuple(float(v) for v in lambdas.split(","))
    lists, fit = ease_lists(*t_csr, n_movies, users, params.k, grid, int(max_items),
                            params.ease_holdout, params.ranking_seed, int(holdout_users),
                            timings)
    seconds = time.perf_counter() - start
    relevant = sparse.csr_take(*r_csr, users)
    popular = ranking.top_k_global_order(ranking.popularity_scores(t_csr[1], n_movies), *t_csr,
                                         users, params.k)
    print_json({"seconds": seconds, "holdout_s": timings.holdout, "gram_s": timings.gram,
                "fit_s": timings.fit, "rank_s": timings.rank, "users": len(users),
                "fit": fit, "ndcg": ranking.ranking_metrics(lists, *relevant, params.k)["ndcg"],
                "popularity_ndcg": ranking.ranking_metrics(popular, *relevant,
                                                           params.k)["ndcg"],
                "peak_mib": peak_mib(), "before_mib": before})


def bench_ease(work: Path, n_ratings: int, lambdas: str, max_items: int, holdout_users: int,
               compare: list[int]) -> None:
    """Prints each measurement as it is made."""
    space = Workspace.create(work, n_ratings)
    if not space.split("train").exists():
        print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings, real stages", flush=True)
        ingest_and_preprocess(space)
    print(f"\n== EASE as evaluate runs it: lambda grid {lambdas} on a hold-out of the train "
          f"split ({holdout_users:,} users ranked), the {max_items:,} most-rated movies, "
          "one process", flush=True)
    r = run_child(__name__, "child_ease", space.prepared, lambdas, max_items, holdout_users)
    fit = r["fit"]
    tried = ", ".join(f"{lam} {ndcg:.4f}" for lam, ndcg in fit["holdout_ndcg"].items())
    print(f"hold-out NDCG@10 per lambda: {tried}; chosen {fit['lambda']:g}")
    print(f"EASE, {fit['movies']:,} of {fit['movies_in_train']:,} movies, {r['users']:,} test "
          f"users: {r['seconds']:.1f} s (grid on the hold-out {r['holdout_s']:.1f} s, Gram "
          f"matrix {r['gram_s']:.1f} s, fit {r['fit_s']:.1f} s, top 10 for every user "
          f"{r['rank_s']:.1f} s); peak memory {r['peak_mib']:,.0f} MiB, of which "
          f"{r['before_mib']:,.0f} MiB before EASE", flush=True)
    print(f"NDCG@10: EASE {r['ndcg']:.4f}, most popular {r['popularity_ndcg']:.4f} "
          f"({r['ndcg'] / r['popularity_ndcg']:.2f}x)", flush=True)
    if not compare:
        return
    print(f"\n== the cost of the restriction: lambda {fit['lambda']:g}, other "
          "evaluate.ease_max_items, one process each", flush=True)
    for items in compare:
        c = run_child(__name__, "child_ease", space.prepared, f"{fit['lambda']:g}",
                      items or 10**9, holdout_users)
        print(f"ease_max_items {items or 'all'} ({c['fit']['movies']:,} movies): NDCG@10 "
              f"{c['ndcg']:.4f} ({c['ndcg'] - r['ndcg']:+.4f} against {max_items:,}); fit "
              f"{c['fit_s']:.1f} s, top 10 {c['rank_s']:.1f} s; peak memory "
              f"{c['peak_mib']:,.0f} MiB", flush=True)
