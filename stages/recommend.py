"""DVC stage `recommend`: the top-n movies for every user of the train split (parquet)."""

import time

import movierec.core.quiet_start  # noqa: F401  (first: keeps TensorFlow's start-up chatter out of the log)
from movierec.core.columns import MOVIE_COL, USER_COL
from movierec.core.config import load_params
from movierec.core.errors import ParamsError
from movierec.core.files import read_parquet, write_parquet
from movierec.core.stage import run_stage, stage_parser
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.nets.saved import read_weights
from movierec.ranking.topn import recommend_all, top_n_table


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="input: trained .keras model")
    parser.add_argument("--train", required=True, help="input: train split (movies to skip)")
    parser.add_argument("--user-index", required=True, help="input: user_idx -> userId")
    parser.add_argument("--movie-index", required=True, help="input: movie_idx -> movieId")
    parser.add_argument("--out", required=True, help="output: userId, rank, movieId, score")
    args = parser.parse_args()
    params = load_params(args.params).recommend
    start = time.perf_counter()
    weights = scoring.from_weights(*read_weights(args.model))
    if params.candidates and not weights.has_main:
        raise ParamsError(
            f"params: recommend.candidates = {params.candidates} (expected 0 for a model "
            "without the dot-product branch, train.model=deep: there is nothing to retrieve by)")
    user_ids = read_parquet(args.user_index, columns=[USER_COL])[USER_COL].to_numpy()
    movie_ids = read_parquet(args.movie_index, columns=[MOVIE_COL])[MOVIE_COL].to_numpy()
    seen = Seen.read(args.train, weights.n_users, weights.n_movies)
    users = seen.users_in_train()
    loaded = time.perf_counter() - start

    last_report = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        # A line every 30 s: none on small data, a handful for every user of ML-20M.
        now = time.perf_counter()
        if now - last_report[0] >= 30 and done < total:
            print(f"recommend: {done:,} of {total:,} users ({now - start:.0f} s)", flush=True)
            last_report[0] = now

    idx, val, timings = recommend_all(weights, users, seen, params.n, params.candidates,
                                      progress=progress)
    table = top_n_table(users, idx, val, user_ids, movie_ids)
    write_parquet(table, args.out)
    n_candidates = int(seen.in_train.sum())
    how = ("exact scores" if not params.candidates
           else f"{params.candidates} candidates by the dot-product branch, scored exactly")
    short = int((idx < 0).any(axis=1).sum())
    print(f"recommend: top {params.n} of {n_candidates:,} movies for {len(users):,} users "
          f"({how}) -> {args.out}, {len(table):,} rows"
          + (f"; {short:,} users have fewer than {params.n} unseen movies" if short else ""))
    print(f"recommend: load {loaded:.1f} s, retrieve {timings.retrieve:.1f} s, score "
          f"{timings.score:.1f} s, select {timings.select:.1f} s ({timings.blocks:,} blocks)")


if __name__ == "__main__":
    run_stage(main)
