"""``python -m movierec worker``: a non-chief task of a ``multi_worker`` training run.

It reads the same params.yaml and prepared data as the chief (the paths dvc.yaml declares),
joins the cluster named in its ``TF_CONFIG``, takes its share of every batch, and writes
nothing: the chief's train stage writes the model, metrics, plots and checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path

from movierec.core.config import load_params
from movierec.core.errors import ParamsError
from movierec.core.files import read_parquet
from movierec.core.paths import pipeline_paths
from movierec.core.stage import raise_if_stopped
from movierec.train.tf_config import task_config


def run_worker(root: str | Path = ".", params_path: str | Path | None = None) -> None:
    start = time.perf_counter()
    params_file = Path(params_path) if params_path else Path(root) / "params.yaml"
    params = load_params(params_file).train
    if params.strategy != "multi_worker":
        raise ParamsError(f"worker: train.strategy in {params_file} is {params.strategy!r} "
                          "(expected multi_worker: a worker only joins a multi-machine run)")
    task_config("worker")  # before TensorFlow starts: a wrong TF_CONFIG fails at once
    from movierec.train import distribute, progress  # imports TensorFlow
    from movierec.train.progress import Watch
    from movierec.train.training import train

    paths = pipeline_paths(root)
    train_df, test_df = read_parquet(paths["train"]), read_parquet(paths["test"])
    n_users = len(read_parquet(paths["user_index"], columns=["user_idx"]))
    n_movies = len(read_parquet(paths["movie_index"], columns=["movie_idx"]))
    place = distribute.start(params, role="worker")
    print(f"worker: {place.description}; training on {len(train_df):,} ratings", flush=True)
    with distribute.cluster_errors(place, "worker"):
        result = train(train_df, test_df, n_users, n_movies, params, place=place,
                       watch=Watch(progress_factory=progress.for_epochs(),
                                   stop_check=raise_if_stopped))
    print(f"worker: done, {len(result.history)} epochs in {time.perf_counter() - start:.1f} s; "
          "wrote nothing (the chief writes the outputs)", flush=True)
