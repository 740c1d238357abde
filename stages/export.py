"""DVC stage `export`: the trained model as a self-contained folder that answers for MovieLens ids
with Keras alone (the model with its id lookups inside, the train split's pairs, a companion)."""

import numpy as np

import movierec.core.quiet_start  # noqa: F401  (first: keeps TensorFlow's start-up chatter out of the log)
from movierec.core.columns import MOVIE_COL, USER_COL
from movierec.core.files import atomic_dir, read_parquet
from movierec.core.stage import run_stage, stage_parser
from movierec.data.sparse import Seen, csr_take
from movierec.nets.portable import portable_model, write_portable
from movierec.nets.saved import read_weights


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="input: the train stage's .keras model")
    parser.add_argument("--train", required=True, help="input: train split (the known ids)")
    parser.add_argument("--user-index", required=True, help="input: user_idx -> userId")
    parser.add_argument("--movie-index", required=True, help="input: movie_idx -> movieId")
    parser.add_argument("--out", required=True, help="output: the portable model's folder")
    args = parser.parse_args()
    spec, weights = read_weights(args.model)
    user_ids = read_parquet(args.user_index, columns=[USER_COL])[USER_COL].to_numpy()
    movie_ids = read_parquet(args.movie_index, columns=[MOVIE_COL])[MOVIE_COL].to_numpy()
    seen = Seen.read(args.train, spec.n_users, spec.n_movies)
    users, movies = seen.users_in_train(), np.flatnonzero(seen.in_train)
    model = portable_model(spec, weights, user_ids, movie_ids, users, movies)
    # The id tables are in ascending id order, and each user's train movies in index order:
    # the pairs come out sorted by user id, then movie id, as the companion's lookups expect.
    indptr, movie_rows = csr_take(seen.indptr, seen.movies, users)
    with atomic_dir(args.out) as folder:
        write_portable(folder, model, user_ids[users], indptr, movie_ids[movie_rows])
    print(f"export: {spec.variant} {spec.objective} model for {len(users):,} users x "
          f"{len(movies):,} movies (MovieLens ids; others map to the out-of-vocabulary row) "
          f"-> {args.out}")


if __name__ == "__main__":
    run_stage(main)
