"""DVC stage `train`: fits the tutorial's residual network (for ratings, or for ranking) and saves
it as .keras, and as the portable folder that answers for MovieLens ids with Keras alone."""

import shutil

import movierec.core.quiet_start  # noqa: F401  (first: keeps TensorFlow's start-up chatter out of the log)
from movierec.core.columns import MOVIE_COL, MOVIE_IDX_COL, USER_COL, USER_IDX_COL
from movierec.core.config import TrainParams, load_params
from movierec.core.files import read_parquet, write_json
from movierec.core.stage import raise_if_stopped, run_stage, stage_parser
from movierec.data.sparse import Seen
from movierec.nets.keras_model import save_model, weights_of
from movierec.nets.portable import export
from movierec.train import distribute, progress
from movierec.train.live import EpochLog
from movierec.train.progress import Watch
from movierec.train.training import TrainResult, train


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--train", required=True, help="input: train split")
    parser.add_argument("--test", required=True, help="input: test split (reported per epoch)")
    parser.add_argument("--user-index", required=True, help="input: user mapping (gives N)")
    parser.add_argument("--movie-index", required=True, help="input: movie mapping (gives M)")
    parser.add_argument("--model", required=True, help="output: .keras model")
    parser.add_argument("--portable", required=True, help="output: the portable model's folder "
                        "(MovieLens ids in, with Keras alone)")
    parser.add_argument("--live", required=True, help="output: per-epoch metrics and curves, "
                        "written by DVCLive after every epoch")
    parser.add_argument("--metrics", required=True, help="output: training summary (json)")
    parser.add_argument("--checkpoint-dir", help="scratch: per-epoch checkpoints, so that a "
                        "killed run resumes from its last completed epoch (removed on success)")
    args = parser.parse_args()
    params = load_params(args.params).train
    place = distribute.start(params)  # before TensorFlow runs anything: threads, devices
    if place.kind != "default":
        print(f"train: {place.description}", flush=True)
    elif line := distribute.device_line("train", "training"):
        print(line, flush=True)

    user_ids = read_parquet(args.user_index, columns=[USER_COL])[USER_COL].to_numpy()
    movie_ids = read_parquet(args.movie_index, columns=[MOVIE_COL])[MOVIE_COL].to_numpy()
    n_users, n_movies = len(user_ids), len(movie_ids)
    train_df, test_df = read_parquet(args.train), read_parquet(args.test)
    log = EpochLog(args.live)
    watch = Watch(on_epoch=log.update, progress_factory=progress.for_epochs(),
                  stop_check=raise_if_stopped)
    try:
        with distribute.cluster_errors(place, "train"):
            result = train(train_df, test_df, n_users, n_movies, params,
                           checkpoint_dir=args.checkpoint_dir, place=place, watch=watch)
    except BaseException:  # diverged, stopped, failed: no curves of a run that did not finish
        log.discard()
        raise

    save_model(result.model, result.spec, args.model)
    n_train = len(train_df)
    seen = Seen.from_pairs(train_df[USER_IDX_COL].to_numpy(), train_df[MOVIE_IDX_COL].to_numpy(),
                           n_users, n_movies)
    del train_df, test_df  # the split is done with: its memory goes before the export's
    export(args.portable, result.spec, weights_of(result.model, result.spec), user_ids,
           movie_ids, seen)
    log.close()
    write_json(summary(result, params, n_train), args.metrics)
    if args.checkpoint_dir:  # every output is in place: there is no run left to resume
        shutil.rmtree(args.checkpoint_dir, ignore_errors=True)
    last = result.history.iloc[-1]
    best = result.history.iloc[result.best_epoch - 1]
    what = "ratings" if not params.ranks else "examples"
    runs = f"{int(last['epoch'])} epochs x {result.examples_per_epoch:,} {what}"
    if result.selection is not None:
        sel = result.selection
        runs = (f"{sel['epochs_run']} epochs on {sel['n_fit']:,} ratings (early-stopped, chose "
                f"{sel['best_epoch']}), then the refit's {runs},")
    if params.ranks:
        stats = result.negatives
        scored = (f"train loss {best['train_loss']:.4f}, test NDCG@{params.ndcg_k} "
                  f"{best['test_ndcg']:.4f}; ")
        if params.objective == "softmax" and params.pool == "sampled":
            scored += (f"each rating against its own movie and {params.negatives:,} sampled "
                       "movies shared by its batch (or the whole catalogue, if no larger), "
                       "rated ones masked")
        elif params.objective == "softmax":  # the pools are drawn inside the training step
            scored += (f"each batch's pool: its positives and {params.negatives:,} sampled "
                       "movies (or the whole catalogue, if no larger), rated ones masked")
        else:
            scored += (f"negatives: {stats['drawn']:,} drawn, {stats['rejected']:,} redrawn "
                       "(a rated movie), none kept")
    else:
        scored = f"train MSE {best['train_mse']:.4f}, test MSE {best['test_mse']:.4f}"
    print(f"train: {params.objective} objective, {runs} in {result.fit_seconds:.1f} s "
          f"({result.samples_per_second:,.0f} samples/s, {params.optimizer}, table updates: "
          f"{params.table_updates}), plus {result.seconds - result.fit_seconds:.1f} s of "
          f"scoring after the epochs; model from epoch {result.best_epoch}: {scored}")


def summary(result: TrainResult, params: TrainParams, n_train: int) -> dict:
    """metrics/train.json: the chosen epoch's figures (a rating run's keys are kept stable, so
    that `dvc metrics diff` lines them up across commits and experiments)."""
    last = result.history.iloc[-1]
    best = result.history.iloc[result.best_epoch - 1]
    out = {"train_mean": result.train_mean, "epochs": int(last["epoch"]),
           "best_epoch": result.best_epoch}
    if params.ranks:
        out.update({"objective": params.objective, "train_loss": float(best["train_loss"]),
                    f"test_ndcg@{params.ndcg_k}": float(best["test_ndcg"])})
        if "val_ndcg" in best:
            out[f"val_ndcg@{params.ndcg_k}"] = float(best["val_ndcg"])
        if params.objective != "softmax":
            out["negatives"] = dict(result.negatives, rejection_rate=round(
                result.negatives["rejected"] / max(result.negatives["drawn"], 1), 6))
    else:
        out["train_mse"] = float(best["train_mse"])
    out.update({"n_train": n_train, "n_fit": result.n_fit,
                "n_weights": int(result.model.count_params())})
    if "val_mse" in best:
        out["val_mse"] = float(best["val_mse"])
    if result.selection is not None:  # refit: the early-stopped run that chose the epochs
        out["selection"] = result.selection
    return out

if __name__ == "__main__":
    run_stage(main)
