"""Training the residual network as the tutorial does: MSE on centred ratings, SGD + momentum."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from movierec.columns import MOVIE_IDX_COL, RATING_COL, USER_IDX_COL
from movierec.config import TrainParams
from movierec.model import build_residual_model, with_offset

# Prediction-only batch size: it changes speed, never the predictions' values beyond float
# rounding, so it is not a params.yaml knob.
PREDICT_BATCH_SIZE = 8192

HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "train_mse", "test_mse")


def make_deterministic(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def model_inputs(df: pd.DataFrame) -> list[np.ndarray]:
    """The (user, movie) index columns shaped (n, 1), as the model's Inputs expect."""
    return [df[USER_IDX_COL].to_numpy(np.int32).reshape(-1, 1),
            df[MOVIE_IDX_COL].to_numpy(np.int32).reshape(-1, 1)]


@dataclass(frozen=True)
class TrainResult:
    model: keras.Model  # predicts ratings (the training mean is inside)
    history: pd.DataFrame  # HISTORY_COLUMNS, one row per epoch
    train_mean: float
    seconds: float
    samples_per_second: float


def train(train_df: pd.DataFrame, test_df: pd.DataFrame, n_users: int, n_movies: int,
          params: TrainParams, verbose: int = 2) -> TrainResult:
    """Fits the tutorial's model; the test split is only reported per epoch (its curve)."""
    make_deterministic(params.seed)
    mu = float(train_df[RATING_COL].to_numpy(np.float64).mean())
    centred = build_residual_model(n_users, n_movies, params.latent_dim, params.hidden_units)
    centred.compile(
        loss=keras.losses.MeanSquaredError(name="loss"),
        optimizer=keras.optimizers.SGD(learning_rate=params.learning_rate,
                                       momentum=params.momentum),
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
        # Runs many SGD steps per call into TensorFlow: the same updates in the same order,
        # far less Python overhead per step.
        steps_per_execution=params.steps_per_execution,
    )
    y_train = train_df[RATING_COL].to_numpy(np.float32) - np.float32(mu)
    y_test = test_df[RATING_COL].to_numpy(np.float32) - np.float32(mu)
    start = time.perf_counter()
    fit = centred.fit(
        x=model_inputs(train_df), y=y_train,
        epochs=params.epochs, batch_size=params.batch_size, shuffle=True,
        validation_data=(model_inputs(test_df), y_test),
        validation_batch_size=PREDICT_BATCH_SIZE,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    h = fit.history
    history = pd.DataFrame({
        "epoch": np.arange(1, len(h["loss"]) + 1),
        "train_loss": h["loss"], "test_loss": h["val_loss"],
        "train_mse": h["mse"], "test_mse": h["val_mse"],
    })
    return TrainResult(model=with_offset(centred, mu), history=history, train_mean=mu,
                       seconds=seconds,
                       samples_per_second=len(train_df) * params.epochs / seconds)


def predict(model: keras.Model, df: pd.DataFrame) -> np.ndarray:
    """Predicted ratings for the (user_idx, movie_idx) rows of ``df``."""
    out = model.predict(model_inputs(df), batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(-1)
