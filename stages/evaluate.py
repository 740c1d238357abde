"""DVC stage `evaluate`: test MSE/RMSE/MAE against the global mean, and the figures."""

import pandas as pd

from movierec import plots
from movierec.cli import run_stage, stage_parser
from movierec.columns import RATING_COL
from movierec.io import read_parquet, write_csv, write_json
from movierec.metrics import per_star, rating_metrics
from movierec.model import load_model, train_mean_of
from movierec.training import predict


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="input: trained .keras model")
    parser.add_argument("--test", required=True, help="input: test split")
    parser.add_argument("--history", required=True, help="input: per-epoch curves from train")
    parser.add_argument("--metrics", required=True, help="output: test metrics (json)")
    parser.add_argument("--per-star", required=True, help="output: error per true rating (csv)")
    parser.add_argument("--loss-png", required=True, help="output: train/test loss per epoch")
    parser.add_argument("--mse-png", required=True, help="output: train/test MSE per epoch")
    parser.add_argument("--by-star-png", required=True, help="output: predicted vs true rating")
    parser.add_argument("--histogram-png", required=True, help="output: rating histograms")
    args = parser.parse_args()

    model = load_model(args.model)
    test_df = read_parquet(args.test)
    y_true = test_df[RATING_COL].to_numpy()
    y_pred = predict(model, test_df)
    report = rating_metrics(y_true, y_pred, train_mean_of(model))
    write_json(report, args.metrics)
    write_csv(pd.DataFrame(per_star(y_true, y_pred)), args.per_star)

    history = pd.read_csv(args.history)
    plots.curve(history, "loss", args.loss_png, "MSE loss (centred ratings)")
    plots.curve(history, "mse", args.mse_png, "mean squared error")
    plots.predicted_by_star(y_true, y_pred, args.by_star_png)
    plots.rating_histograms(y_true, y_pred, args.histogram_png)
    print(f"evaluate: test MSE {report['mse']:.4f}, RMSE {report['rmse']:.4f}, "
          f"MAE {report['mae']:.4f} on {report['n_test']:,} ratings; "
          f"global mean MSE {report['global_mean']['mse']:.4f}")


if __name__ == "__main__":
    run_stage(main)
