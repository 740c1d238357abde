"""Training runs: epochs, validation, early stopping, refit and checkpoints.

The step itself (the loss of one batch, its gradients and the update rules) is in ``steps``;
the objectives' losses and their epoch data in ``objectives``. This module drives them: it
builds each epoch's examples (the ratings, shuffled, or positives with freshly sampled
negatives), runs the epochs, scores the test split (and the validation part of the train split)
after each, stops early, refits, and checkpoints every completed epoch so that a killed run
resumes exactly.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from movierec.core.columns import MOVIE_IDX_COL, RATING_COL, USER_IDX_COL
from movierec.core.config import TrainParams
from movierec.core.errors import DataError
from movierec.core.stage import raise_if_stopped
from movierec.nets import scoring
from movierec.nets.keras_model import build_model, for_saving, weights_of
from movierec.nets.spec import NetSpec
from movierec.train import checkpoint, distribute, objectives
from movierec.train.distribute import Placement
from movierec.train.negatives import NegativeSampler
from movierec.train.objectives import epoch_data
from movierec.train.probes import RankingProbe
from movierec.train.progress import Watch
from movierec.train.rules import UpdateRule
from movierec.train.steps import RowSplitModel, TrainLoop

# The per-epoch curves (plots/training.csv): the rating objective's, as the tutorial draws
# them, and the ranking objectives' (the loss, and NDCG@k of full-catalogue top-k lists).
HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "train_mse", "test_mse")
VAL_COLUMNS = ("val_loss", "val_mse")
RANKING_HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "test_ndcg")
RANKING_VAL_COLUMNS = ("val_loss", "val_ndcg")
# Seed of the negatives drawn once for the held-out parts' per-epoch loss (fixed, so that the
# curve moves with the weights only).
HELD_OUT_NEGATIVES_SEED = 0
# The order and shapes of the checkpointed optimiser state (TrainLoop.state_variables); a
# checkpoint written by a loop with another layout is ignored, not misread.
STATE_LAYOUT = 2


def make_deterministic(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class TrainResult:
    # rating: predicts ratings (the training mean is inside); ranking objectives: a score
    model: keras.Model
    spec: NetSpec  # what the model is: saved with it (keras_model.save_model)
    history: pd.DataFrame  # (RANKING_)HISTORY_COLUMNS (+ (RANKING_)VAL_COLUMNS), per epoch
    train_mean: float  # the rating objective's centring (0 for the ranking objectives)
    seconds: float  # everything: epochs and per-epoch scoring
    fit_seconds: float  # the epochs alone (for ranking, with the negatives' sampling)
    samples_per_second: float  # training examples per second of fit_seconds
    best_epoch: int  # the epoch whose weights the model has (the last without validation)
    n_fit: int  # ratings the SGD steps used (the train split less the validation part)
    # With refit: the early-stopped run that chose the epoch count (best_epoch, epochs_run,
    # val_mse or val_ndcg, n_fit); the fields above describe the final run on the whole split.
    selection: dict | None = None
    examples_per_epoch: int = 0  # ratings (rating), positives + negatives (bce), triples (bpr)
    negatives: dict | None = None  # the sampler's counts: drawn, rejected (hit a positive)


def split_validation(train_df: pd.DataFrame, fraction: float,
                     seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A seeded random ``fraction`` of the train split held out for early stopping."""
    if fraction == 0:
        return train_df, None
    order = np.random.default_rng(seed).permutation(len(train_df))
    n_val = round(len(train_df) * fraction)
    if not 0 < n_val < len(train_df):
        raise DataError(f"train: val_fraction={fraction} of {len(train_df)} ratings "
                         "leaves an empty part (expected both parts non-empty)")
    return (train_df.iloc[np.sort(order[n_val:])], train_df.iloc[np.sort(order[:n_val])])


def _as_tensors(df: pd.DataFrame, mu: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    return (tf.constant(df[USER_IDX_COL].to_numpy(np.int32)),
            tf.constant(df[MOVIE_IDX_COL].to_numpy(np.int32)),
            tf.constant(df[RATING_COL].to_numpy(np.float32) - np.float32(mu)))


def _ids(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return df[USER_IDX_COL].to_numpy(), df[MOVIE_IDX_COL].to_numpy()


def _held_out_loss(loop: TrainLoop, fit_df: pd.DataFrame, df: pd.DataFrame,
                   params: TrainParams, n_users: int, n_movies: int):
    """A function giving a ranking objective's loss on held-out pairs ``df``: each pair a
    positive, with ``params.negatives`` negatives drawn once (never a movie the user rated in
    the fit data or in ``df``), plus the L2 terms."""
    users, movies = (np.concatenate(p) for p in zip(_ids(fit_df), _ids(df), strict=True))
    sampler = NegativeSampler(users, movies, n_users, n_movies, params.negative_sampling)
    data = epoch_data(params.objective, *_ids(df), np.zeros(len(df), np.float32),
                      np.random.default_rng(HELD_OUT_NEGATIVES_SEED), sampler, params.negatives)
    u, m = tf.constant(data.users), tf.constant(data.movies)
    neg = tf.constant(data.negatives)

    def loss() -> float:
        negative_scores = loop.predict(u, neg) if params.objective == "bpr" else None
        return (objectives.mean_loss(params.objective, loop.predict(u, m), data.targets,
                                     negative_scores) + loop.penalty(*_ids(df)))
    return loss


def _mse_scorer(loop: TrainLoop, df: pd.DataFrame, mu: float):
    """A function giving (MSE, loss) on ``df`` at the loop's current weights."""
    users, movies, y = _as_tensors(df, mu)
    target = y.numpy().astype(np.float64)
    ids = (users.numpy(), movies.numpy())

    def score() -> tuple[float, float]:
        error = float(np.mean((loop.predict(users, movies) - target) ** 2))
        return error, error + loop.penalty(*ids)
    return score


def setup(params: TrainParams, n_users: int, n_movies: int,
          place: Placement | None = None) -> tuple[keras.Model, TrainLoop]:
    """Seeds, the centred model and its training loop under ``place``'s strategy (by default
    :func:`distribute.start`'s for the params: threads, devices)."""
    place = place or distribute.start(params)
    make_deterministic(params.seed)
    spec = NetSpec.for_training(params, n_users, n_movies)
    centred = build_model(spec)
    return centred, TrainLoop(RowSplitModel(centred, spec), params.batch_size,
                              UpdateRule.from_params(params), place.strategy, seed=params.seed)


def train(train_df: pd.DataFrame, test_df: pd.DataFrame, n_users: int, n_movies: int,
          params: TrainParams, verbose: int = 2,
          checkpoint_dir: str | Path | None = None,
          place: Placement | None = None, watch: Watch | None = None) -> TrainResult:
    """Fits the tutorial's model with ``params.objective``.

    The test split is only scored for the report (its per-epoch curve) and never decides
    anything. With ``params.val_fraction > 0``, that fraction of the train split is held out;
    training stops after ``params.patience`` epochs without a better validation score (a lower
    MSE for the rating objective, a higher NDCG@k of full-catalogue lists for the ranking
    ones), and the model gets the weights of its best validation epoch. With ``params.refit``,
    the model is then trained again from the same initial weights on the whole train split,
    for the number of epochs early stopping chose: the held-out ratings are used for fitting
    too.

    With ``checkpoint_dir``, every completed epoch is checkpointed there, and a run with the
    same params and data resumes from the last one, ending exactly as an uninterrupted run.

    ``place``: where to train (default: :func:`distribute.start` for ``params``). Under
    ``multi_worker`` every task calls this with the same params and data; only the chief
    should pass a ``checkpoint_dir``, and it sends its checkpoint to the others.

    ``watch``: the stage's live view of the run (per-epoch history, progress within epochs).
    """
    place = place or distribute.start(params)
    watch = watch or Watch()
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fit_df, val_df = split_validation(train_df, params.val_fraction, params.seed)
    result = _fit(fit_df, val_df, test_df, n_users, n_movies, params, params.epochs, verbose,
                  place, folder / "select.npz" if folder and params.refit else
                  folder / "train.npz" if folder else None,
                  watch, "selection" if params.refit else None)
    if not params.refit:
        return result
    if verbose:
        print(f"refit: early stopping chose {result.best_epoch} epochs; training again on all "
              f"{len(train_df):,} ratings of the train split", flush=True)
    final = _fit(train_df, None, test_df, n_users, n_movies, params, result.best_epoch, verbose,
                 place, folder / "refit.npz" if folder else None, watch)
    samples = (result.samples_per_second * result.fit_seconds
               + final.examples_per_epoch * final.best_epoch)
    fit_seconds = result.fit_seconds + final.fit_seconds
    val = "val_ndcg" if params.ranks else "val_mse"
    return dataclasses.replace(
        final, seconds=result.seconds + final.seconds, fit_seconds=fit_seconds,
        samples_per_second=samples / max(fit_seconds, 1e-9),
        selection={"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                   val: float(result.history[val].iloc[result.best_epoch - 1]),
                   "n_fit": result.n_fit})


class _Scores:
    """What is measured after each epoch: the history row's values past the train loss, and
    the early-stopping criterion (lower is better) when there is a validation part."""

    def __init__(self, loop: TrainLoop, centred: keras.Model, fit_df: pd.DataFrame,
                 val_df: pd.DataFrame | None, test_df: pd.DataFrame, mu: float,
                 params: TrainParams, n_users: int, n_movies: int):
        self.ranks = params.ranks
        self.centred = centred
        self.spec = loop.split.spec
        self.k = params.ndcg_k
        if self.ranks:  # NDCG@k of top-k lists over the catalogue minus the user's fit movies
            def probe(df: pd.DataFrame) -> RankingProbe:
                return RankingProbe(*_ids(fit_df), *_ids(df), n_users, n_movies, params.ndcg_k,
                                    params.ndcg_users, params.seed)
            def loss(df: pd.DataFrame):
                return _held_out_loss(loop, fit_df, df, params, n_users, n_movies)
            self.test = (probe(test_df), loss(test_df))
            self.val = (probe(val_df), loss(val_df)) if val_df is not None else None
        else:
            self.test = _mse_scorer(loop, test_df, mu)
            self.val = _mse_scorer(loop, val_df, mu) if val_df is not None else None

    @property
    def columns(self) -> list[str]:
        if self.ranks:
            return list(RANKING_HISTORY_COLUMNS) + (list(RANKING_VAL_COLUMNS) if self.val else [])
        return list(HISTORY_COLUMNS) + (list(VAL_COLUMNS) if self.val else [])

    def after_epoch(self, train_loss: float, train_penalty: float
                    ) -> tuple[list[float], float | None, str]:
        """(the row after the epoch number, criterion, a note for the log)."""
        if self.ranks:
            # Once per epoch, for both probes.
            weights = scoring.from_weights(self.spec, weights_of(self.centred, self.spec))
            test = self.test[0].ndcg(weights)
            row = [train_loss + train_penalty, self.test[1](), test]
            if self.val is None:
                return row, None, f"train loss {row[0]:.4f}, test NDCG@{self.k} {test:.4f}"
            val = self.val[0].ndcg(weights)
            return ([*row, self.val[1](), val], -val, f"train loss {row[0]:.4f}, validation "
                    f"NDCG@{self.k} {val:.4f}, test NDCG@{self.k} {test:.4f}")
        test_mse, test_loss = self.test()
        row = [train_loss + train_penalty, test_loss, train_loss, test_mse]
        note = f"train MSE {train_loss:.4f}"
        criterion = None
        if self.val is not None:
            val_mse, val_loss = self.val()
            row += [val_loss, val_mse]
            criterion = val_mse
            note += f", validation MSE {val_mse:.4f}"
        return row, criterion, note + f", test MSE {test_mse:.4f}"


def _fit(fit_df: pd.DataFrame, val_df: pd.DataFrame | None, test_df: pd.DataFrame,
         n_users: int, n_movies: int, params: TrainParams, epochs: int, verbose: int,
         place: Placement, checkpoint_path: Path | None, watch: Watch,
         run: str | None = None) -> TrainResult:
    """One training run on ``fit_df`` for at most ``epochs``, early-stopped on ``val_df``,
    checkpointed after every epoch to ``checkpoint_path`` and resumed from it; ``watch``
    sees the history after every epoch (and the restored one after a resume) as ``run``."""
    # The rating objective learns ratings centred on their mean; the others learn labels.
    mu = 0.0 if params.ranks else float(fit_df[RATING_COL].to_numpy(np.float64).mean())
    centred, loop = setup(params, n_users, n_movies, place)
    fit_users, fit_movies = _ids(fit_df)
    targets = fit_df[RATING_COL].to_numpy(np.float32) - np.float32(mu)
    sampler = (NegativeSampler(fit_users, fit_movies, n_users, n_movies,
                               params.negative_sampling) if params.ranks else None)
    scores = _Scores(loop, centred, fit_df, val_df, test_df, mu, params, n_users, n_movies)
    # One shuffle per epoch, as model.fit(shuffle=True) does, from the run's seed; the same
    # generator draws the negatives, so its state is all a resumed run needs to redraw them.
    rng = np.random.default_rng(params.seed)
    state = list(centred.variables) + loop.state_variables()

    rows = []
    fit_seconds = 0.0
    best = (np.inf, 0, None)  # criterion (lower is better), epoch, weights
    seconds_before = 0.0
    saved = digest = None
    if checkpoint_path is not None or place.multi_worker:  # hashing the data takes a while
        digest = checkpoint.fingerprint(params, [fit_df, val_df, test_df], epochs=epochs,
                                        n_users=n_users, n_movies=n_movies,
                                        state_layout=STATE_LAYOUT)
    if checkpoint_path is not None:
        saved = checkpoint.load(checkpoint_path, digest)
    if saved is None and checkpoint_path is not None and checkpoint_path.exists() and verbose:
        print(f"train: ignoring {checkpoint_path} (other params or data, or unreadable)",
              flush=True)
    if place.multi_worker:
        saved = _share_start(place, digest, saved)
    if saved is not None:
        meta, arrays = saved
        for i, var in enumerate(state):
            var.assign(arrays[f"state_{i}"])
        loop.pull()
        rows = meta["rows"]
        fit_seconds, seconds_before = meta["fit_seconds"], meta["seconds"]
        if meta["best_epoch"]:
            best = (meta["best_val"], meta["best_epoch"],
                    [arrays[f"best_{i}"] for i in range(len(centred.weights))])
        rng.bit_generator.state = meta["rng"]  # where the shuffles had got to
        if sampler is not None:
            sampler.stats = dataclasses.replace(sampler.stats, **meta["negatives"])
        if verbose:
            source = checkpoint_path or "the chief's checkpoint"
            print(f"train: resuming after epoch {len(rows)} from {source}", flush=True)
        watch.epoch(pd.DataFrame(rows, columns=scores.columns), run)

    def stopped() -> bool:
        return scores.val is not None and bool(rows) and len(rows) - best[1] >= params.patience

    start = time.perf_counter()
    n_examples = 0
    while len(rows) < epochs and not stopped():
        epoch = len(rows) + 1
        tick = time.perf_counter()
        data = epoch_data(params.objective, fit_users, fit_movies, targets, rng, sampler,
                          params.negatives)
        n_examples = len(data)
        bar = watch.progress(f"epoch {epoch}/{epochs}", loop.steps_in(n_examples))
        try:
            train_loss = loop.epoch(tf.constant(data.users), tf.constant(data.movies),
                                    tf.constant(data.targets), params.steps_per_execution,
                                    tf.constant(data.negatives), on_steps=bar.update)
        finally:
            bar.close()
        fit_seconds += time.perf_counter() - tick
        # Loss = the objective + the L2 terms (at the epoch's final weights), as Keras reports.
        values, criterion, note = scores.after_epoch(train_loss,
                                                     loop.penalty(fit_users, fit_movies))
        if criterion is not None and criterion < best[0]:
            best = (criterion, epoch, [w.numpy() for w in centred.weights])
        rows.append([epoch, *values])
        watch.epoch(pd.DataFrame(rows, columns=scores.columns), run)
        if verbose:
            print(f"epoch {epoch}/{epochs}: {note} ({time.perf_counter() - tick:.1f} s)",
                  flush=True)
        if checkpoint_path is not None and place.is_chief:
            arrays = {f"state_{i}": var.numpy() for i, var in enumerate(state)}
            if best[2] is not None:
                arrays.update({f"best_{i}": w for i, w in enumerate(best[2])})
            checkpoint.save(checkpoint_path, {
                "fingerprint": digest, "rows": rows, "fit_seconds": fit_seconds,
                "seconds": seconds_before + time.perf_counter() - start,
                "best_val": float(best[0]), "best_epoch": best[1],
                "rng": rng.bit_generator.state,
                "negatives": dataclasses.asdict(sampler.stats) if sampler else None}, arrays)
        raise_if_stopped()  # a stop signal that library code swallowed during the epoch
    if stopped() and verbose:
        what = f"NDCG@{params.ndcg_k}" if params.ranks else "MSE"
        print(f"early stop: no better validation {what} for {params.patience} epochs; "
              f"keeping epoch {best[1]}'s weights", flush=True)
    seconds = seconds_before + time.perf_counter() - start
    history = pd.DataFrame(rows, columns=scores.columns).astype({"epoch": int})
    best_epoch = len(rows)
    if val_df is not None:
        best_epoch = best[1]
        for weight, value in zip(centred.weights, best[2], strict=True):
            weight.assign(value)
    if not n_examples:  # resumed after the last epoch: count what an epoch holds
        n_examples = len(fit_df) * objectives.examples_per_rating(params.objective,
                                                                  params.negatives)
    spec = dataclasses.replace(loop.split.spec, train_mean=mu)
    return TrainResult(model=for_saving(centred, spec), spec=spec, history=history, train_mean=mu,
                       seconds=seconds, fit_seconds=fit_seconds,
                       samples_per_second=n_examples * len(rows) / max(fit_seconds, 1e-9),
                       best_epoch=best_epoch, n_fit=len(fit_df), examples_per_epoch=n_examples,
                       negatives=dataclasses.asdict(sampler.stats) if sampler else None)


def _share_start(place: Placement, digest: str, saved: tuple | None) -> tuple | None:
    """``multi_worker``: the chief's data fingerprint and checkpoint, on every task.

    Every task must train on the same params and data from the same weights; a worker whose
    fingerprint differs stops with one line rather than train on something else.
    """
    payload = digest.encode() + b"\n" + (checkpoint.to_bytes(*saved) if saved else b"")
    received = distribute.broadcast_bytes(place, payload if place.is_chief else b"")
    chief_digest, _, state = received.partition(b"\n")
    if chief_digest.decode() != digest:
        raise distribute.ClusterError(
            f"worker: params or data differ from the chief's (fingerprint {digest[:12]}, the "
            f"chief's {chief_digest.decode()[:12]}); run it on the chief's params.yaml and "
            "prepared data (dvc pull)")
    return checkpoint.from_bytes(state) if state else None
