"""DVC stage `ingest`: the canonical ratings and movies tables (parquet)."""

from movierec.core.columns import MOVIE_COL, USER_COL
from movierec.core.config import load_params
from movierec.core.files import write_parquet
from movierec.core.stage import run_stage, stage_parser
from movierec.data.ingest import load_dataset


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--download-dir", required=True, help="input: the download stage's folder")
    parser.add_argument("--ratings", required=True, help="output: userId,movieId,rating,timestamp")
    parser.add_argument("--movies", required=True, help="output: movieId,title,genres")
    args = parser.parse_args()
    params = load_params(args.params).data

    ratings, movies, note = load_dataset(params, args.download_dir)
    write_parquet(ratings, args.ratings)
    write_parquet(movies, args.movies)
    print(f"ingest: read {note}")
    print(f"ingest: {params.dataset}: {len(ratings):,} ratings, "
          f"{ratings[USER_COL].nunique():,} users, {ratings[MOVIE_COL].nunique():,} rated movies, "
          f"{len(movies):,} listed movies -> {args.ratings}, {args.movies}")


if __name__ == "__main__":
    run_stage(main)
