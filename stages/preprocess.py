"""DVC stage `preprocess`: contiguous user/movie indices, seeded train/test split."""

from movierec.core.config import load_params
from movierec.core.files import read_parquet, write_parquet
from movierec.core.stage import run_stage, stage_parser
from movierec.data.preprocess import prepare
from movierec.data.tables import validate_ratings


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--ratings", required=True, help="input: canonical ratings")
    parser.add_argument("--movies", required=True, help="input: canonical movies")
    parser.add_argument("--train", required=True, help="output: train split")
    parser.add_argument("--test", required=True, help="output: test split")
    parser.add_argument("--user-index", required=True, help="output: user_idx -> userId")
    parser.add_argument("--movie-index", required=True, help="output: movie_idx -> movieId, title")
    args = parser.parse_args()
    params = load_params(args.params).preprocess

    ratings = validate_ratings(read_parquet(args.ratings), args.ratings)
    prepared = prepare(ratings, read_parquet(args.movies), params.test_fraction, params.seed,
                       split=params.split)
    write_parquet(prepared.train, args.train)
    write_parquet(prepared.test, args.test)
    write_parquet(prepared.users, args.user_index)
    write_parquet(prepared.movies, args.movie_index)
    print(f"preprocess: {len(prepared.users):,} users x {len(prepared.movies):,} movies; "
          f"train {len(prepared.train):,}, test {len(prepared.test):,} ratings "
          f"(split={params.split}, test_fraction={params.test_fraction}, seed={params.seed})")


if __name__ == "__main__":
    run_stage(main)
