"""DVC stage `evaluate`: test MSE/RMSE/MAE and top-k ranking quality against baselines, and
the figures."""

import movierec.core.quiet_start  # noqa: F401  (first: keeps TensorFlow's start-up chatter out of the log)
from movierec.core.columns import MOVIE_COL, MOVIE_IDX_COL, RATING_COL, USER_COL, USER_IDX_COL
from movierec.core.config import load_params
from movierec.core.files import read_parquet, write_csv, write_json
from movierec.core.stage import run_stage, stage_parser
from movierec.evaluate import report
from movierec.nets import scoring
from movierec.nets.saved import read_weights
from movierec.train.live import read_history


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="input: trained .keras model")
    parser.add_argument("--train", required=True, help="input: train split (for the baseline)")
    parser.add_argument("--test", required=True, help="input: test split")
    parser.add_argument("--top-n", required=True, help="input: the recommend stage's lists")
    parser.add_argument("--user-index", required=True, help="input: user_idx -> userId")
    parser.add_argument("--movie-index", required=True, help="input: movie_idx -> movieId")
    parser.add_argument("--history", required=True, help="input: the train stage's DVCLive "
                        "folder (per-epoch curves)")
    parser.add_argument("--metrics", required=True, help="output: test metrics (json)")
    parser.add_argument("--per-star", required=True, help="output: error per true rating (csv)")
    parser.add_argument("--curves", required=True, help="output: MSE or NDCG per epoch (csv)")
    parser.add_argument("--ranking-bars", required=True, help="output: the ranking rows (csv)")
    parser.add_argument("--loss-png", required=True, help="output: train/test loss per epoch")
    parser.add_argument("--mse-png", required=True, help="output: train/test MSE per epoch")
    parser.add_argument("--by-star-png", required=True, help="output: predicted vs true rating")
    parser.add_argument("--histogram-png", required=True, help="output: rating histograms")
    args = parser.parse_args()
    params = load_params(args.params).evaluate

    spec, weights = read_weights(args.model)
    inputs = report.Inputs(
        scorer=scoring.from_weights(spec, weights), spec=spec,
        train=read_parquet(args.train, columns=[USER_IDX_COL, MOVIE_IDX_COL, RATING_COL]),
        test=read_parquet(args.test), top_n=read_parquet(args.top_n), top_n_source=args.top_n,
        user_ids=read_parquet(args.user_index, columns=[USER_COL])[USER_COL].to_numpy(),
        movie_ids=read_parquet(args.movie_index, columns=[MOVIE_COL])[MOVIE_COL].to_numpy())
    history = read_history(args.history)
    result = report.evaluate(inputs, params)
    write_json(result.report, args.metrics)
    write_csv(result.per_star, args.per_star)
    # "NaN", not an empty cell: Vega-Lite reads "" as 0 and draws it, but leaves NaN out.
    write_csv(report.epoch_curves(history, spec), args.curves, na_rep="NaN")
    write_csv(report.ranking_bars(result.report), args.ranking_bars)
    report.draw_figures(inputs, result, history, report.FigurePaths(
        args.loss_png, args.mse_png, args.by_star_png, args.histogram_png))
    for line in report.summary_lines(result.report, spec):
        print(line)


if __name__ == "__main__":
    run_stage(main)
