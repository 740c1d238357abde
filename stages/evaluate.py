"""DVC stage `evaluate`: test MSE/RMSE/MAE and top-k ranking quality against baselines, and
the figures."""

import numpy as np
import pandas as pd

import movierec.core.quiet_start  # noqa: F401  (first: keeps TensorFlow's start-up chatter out of the log)
from movierec.core.columns import MOVIE_COL, MOVIE_IDX_COL, RATING_COL, USER_COL, USER_IDX_COL
from movierec.core.config import load_params
from movierec.core.files import read_parquet, write_csv, write_json
from movierec.core.stage import run_stage, stage_parser
from movierec.evaluate import plots
from movierec.evaluate.baselines import fit_biases
from movierec.evaluate.metrics import per_star, rating_metrics
from movierec.evaluate.ranking_report import ranking_section
from movierec.nets.keras_model import load_model, objective_of, predict, train_mean_of
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
    parser.add_argument("--loss-png", required=True, help="output: train/test loss per epoch")
    parser.add_argument("--mse-png", required=True, help="output: train/test MSE per epoch")
    parser.add_argument("--by-star-png", required=True, help="output: predicted vs true rating")
    parser.add_argument("--histogram-png", required=True, help="output: rating histograms")
    args = parser.parse_args()
    params = load_params(args.params).evaluate

    model = load_model(args.model)
    objective = objective_of(model)
    test_df = read_parquet(args.test)
    y_true = test_df[RATING_COL].to_numpy()
    y_pred = predict(model, test_df)  # ratings, or a ranking model's scores
    # The bias baseline sees the same training split as the model and ids from the same index.
    train_df = read_parquet(args.train, columns=[USER_IDX_COL, MOVIE_IDX_COL, RATING_COL])
    n_users = model.get_layer("user_embedding").input_dim
    n_movies = model.get_layer("movie_embedding").input_dim
    biases = fit_biases(train_df[USER_IDX_COL].to_numpy(), train_df[MOVIE_IDX_COL].to_numpy(),
                        train_df[RATING_COL].to_numpy(), n_users, n_movies,
                        params.bias_reg_user, params.bias_reg_movie, params.bias_epochs)
    if objective == "rating":
        bias_pred = biases.predict(test_df[USER_IDX_COL].to_numpy(),
                                   test_df[MOVIE_IDX_COL].to_numpy())
        report = rating_metrics(y_true, y_pred, train_mean_of(model), bias_pred)
    else:
        report = {"objective": objective, "n_test": len(test_df),
                  "rating_metrics": f"none: trained with train.objective={objective}, the model "
                                    "outputs a ranking score, not a rating"}

    # Ranking: the full catalogue, the model's lists from the recommend stage.
    report["ranking"] = ranking_section(
        train_df, test_df, read_parquet(args.top_n), args.top_n,
        read_parquet(args.user_index, columns=[USER_COL])[USER_COL].to_numpy(),
        read_parquet(args.movie_index, columns=[MOVIE_COL])[MOVIE_COL].to_numpy(),
        biases.movie, params)
    write_json(report, args.metrics)
    stars = per_star(y_true, y_pred)
    if objective != "rating":  # the mean score per star stays; an RMSE of scores means nothing
        stars = [{k: v for k, v in row.items() if k != "rmse"} for row in stars]
    write_csv(pd.DataFrame(stars), args.per_star)

    history = read_history(args.history)
    if objective == "rating":
        plots.curve(history, "loss", args.loss_png, "MSE loss (centred ratings)")
        plots.curve(history, "mse", args.mse_png, "mean squared error")
        plots.predicted_by_star(y_true, y_pred, args.by_star_png)
        plots.rating_histograms(y_true, y_pred, args.histogram_png)
        print(f"evaluate: test MSE {report['mse']:.4f}, RMSE {report['rmse']:.4f}, "
              f"MAE {report['mae']:.4f} on {report['n_test']:,} ratings; baselines: global "
              f"mean MSE {report['global_mean']['mse']:.4f}, user + movie biases MSE "
              f"{report['bias_baseline']['mse']:.4f}")
    else:  # the MSE figure's place holds the per-epoch NDCG, the ranking models' curve
        plots.curve(history, "loss", args.loss_png, f"{objective} loss")
        plots.curve(history, "ndcg", args.mse_png, "NDCG@k, full catalogue (train.ndcg_k)")
        plots.predicted_by_star(y_true, y_pred, args.by_star_png, scores=True)
        rng = np.random.default_rng(0)  # random pairs to contrast with the held-out ones
        pairs = pd.DataFrame({USER_IDX_COL: rng.integers(0, n_users, len(test_df)),
                              MOVIE_IDX_COL: rng.choice(np.unique(train_df[MOVIE_IDX_COL]),
                                                        len(test_df))})
        plots.score_histograms(y_pred, predict(model, pairs), args.histogram_png)
        print(f"evaluate: a {objective} model scores pairs, it does not predict ratings; "
              f"no rating metrics")
    rank = report["ranking"]
    for name in ("model", "popularity", "biases"):
        r = rank[name]
        print(f"evaluate: ranking@{rank['k']} over {rank['users']:,} users, {name}: precision "
              f"{r['precision']:.4f}, recall {r['recall']:.4f}, NDCG {r['ndcg']:.4f}, "
              f"MAP {r['map']:.4f}")
    ratio = rank["model"]["ndcg"] / max(rank["popularity"]["ndcg"], 1e-12)
    print(f"evaluate: the model's NDCG@{rank['k']} is {ratio:.2f}x the most-popular list's: "
          + ("it beats popularity" if ratio > 1 else "it does NOT beat popularity"))

if __name__ == "__main__":
    run_stage(main)
