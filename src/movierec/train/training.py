"""Training runs: epochs, validation, early stopping, refit and checkpoints.

The step itself (the loss of one batch, its gradients and the update rules) is in ``steps``;
the objectives' losses and their epoch data in ``objectives``; what is scored after each epoch
in ``scores``. This module drives them: it builds each epoch's examples (the ratings, shuffled,
or positives with freshly sampled negatives), runs the epochs, scores the test split (and the
validation part of the train split) after each, stops early, refits, and checkpoints every
completed epoch so that a killed run resumes exactly. A run whose loss or weights become NaN or
infinite stops there with :class:`DivergedError`, keeping nothing of that epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from movierec.core.columns import RATING_COL
from movierec.core.config import TrainParams
from movierec.core.errors import DataError, MovieRecError
from movierec.nets.keras_model import build_model, for_saving
from movierec.nets.spec import NetSpec
from movierec.train import checkpoint, distribute, objectives
from movierec.train.distribute import Placement
from movierec.train.negatives import NegativeSampler
from movierec.train.objectives import epoch_data
from movierec.train.pools import Pools
from movierec.train.progress import Watch
from movierec.train.row_split import RowSplitModel
from movierec.train.rules import UpdateRule
from movierec.train.scores import Scores, ids_of
from movierec.train.steps import NonFiniteLoss, TrainLoop


class DivergedError(MovieRecError):
    """A run's training loss or weights became NaN or infinite: it stops at the first such
    epoch, whose row, checkpoint and weights are never kept."""


def make_deterministic(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow and makes TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class TrainResult:
    # rating: predicts ratings (the training mean is inside); ranking objectives: a score
    model: keras.Model
    spec: NetSpec  # what the model is: saved with it (keras_model.save_model)
    history: pd.DataFrame  # scores.(RANKING_)HISTORY_COLUMNS (+ (RANKING_)VAL_COLUMNS)
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


def setup(params: TrainParams, n_users: int, n_movies: int,
          place: Placement | None = None,
          sampler: NegativeSampler | None = None) -> tuple[keras.Model, TrainLoop]:
    """Seeds, the centred model and its training loop under ``place``'s strategy (by default
    :func:`distribute.start`'s for the params: threads, devices). The softmax objective
    draws its pools from ``sampler``, built on the fit ratings."""
    place = place or distribute.start(params)
    make_deterministic(params.seed)
    spec = NetSpec.for_training(params, n_users, n_movies)
    centred = build_model(spec)
    pools = None
    # The softmax's CPU kernel runs between TensorFlow's ops, so it can use every core
    # whatever those ops use (train.intra_op_threads).
    pair_threads = params.kernel_threads or os.cpu_count() or 1
    if params.objective == "softmax":
        if sampler is None:
            raise ValueError("setup: the softmax objective needs the fit ratings' sampler")
        pools = Pools(sampler, sampler.movies, n_movies, params.negatives, params.batch_size,
                      params.seed, sampled=params.pool == "sampled",
                      batch_negatives=params.batch_negatives, threads=pair_threads)
    return centred, TrainLoop(RowSplitModel(centred, spec), params.batch_size,
                              UpdateRule.from_params(params), place.strategy, seed=params.seed,
                              pools=pools, pair_kernel=params.pair_kernel,
                              pair_threads=pair_threads)


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
    same params, data and code resumes from the last one, ending exactly as an uninterrupted
    run.

    A NaN or infinite training loss (or weights) raises :class:`DivergedError` at the first
    such epoch, naming it and the steps; that epoch is neither checkpointed nor shown to
    ``watch``.

    ``place``: where to train (default: :func:`distribute.start` for ``params``). Under
    ``multi_worker`` every task calls this with the same params and data; only the chief
    should pass a ``checkpoint_dir``, and it sends its checkpoint to the others.

    ``watch``: the stage's live view of the run (per-epoch history, progress within epochs)
    and its stop check, called after every epoch.
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
                 place, folder / "refit.npz" if folder else None, watch, "refit")
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


@dataclass
class BestEpoch:
    """Early stopping's choice so far: the epoch of the lowest criterion, and its weights."""

    criterion: float = math.inf  # lower is better; a NaN criterion is never better
    epoch: int = 0  # 0: none yet
    weights: list[np.ndarray] | None = None

    def offer(self, criterion: float | None, epoch: int, model: keras.Model) -> None:
        """Keeps ``epoch`` (and ``model``'s weights) if its criterion is the best so far."""
        if criterion is not None and criterion < self.criterion:
            self.criterion, self.epoch = criterion, epoch
            self.weights = [w.numpy() for w in model.weights]


def _fit(fit_df: pd.DataFrame, val_df: pd.DataFrame | None, test_df: pd.DataFrame,
         n_users: int, n_movies: int, params: TrainParams, epochs: int, verbose: int,
         place: Placement, checkpoint_path: Path | None, watch: Watch,
         phase: str | None = None) -> TrainResult:
    """One training run on ``fit_df`` for at most ``epochs``, early-stopped on ``val_df``,
    checkpointed after every epoch to ``checkpoint_path`` and resumed from it. ``phase``:
    ``selection`` (the early-stopped run before a refit), ``refit`` or None."""
    run = _Run(fit_df, val_df, test_df, n_users, n_movies, params, epochs, verbose, place,
               checkpoint_path, watch, phase)
    run.restore()
    while run.wants_epoch():
        run.run_epoch()
        run.save()
        watch.check_stop()  # e.g. a stop signal that library code swallowed during the epoch
    return run.finish()


class _Run:
    """The state of one training run (:func:`_fit`), a step of it per method: restore it
    from a checkpoint or the chief's, run an epoch, checkpoint it, and finish it (the best
    epoch's weights and the :class:`TrainResult`)."""

    def __init__(self, fit_df: pd.DataFrame, val_df: pd.DataFrame | None,
                 test_df: pd.DataFrame, n_users: int, n_movies: int, params: TrainParams,
                 epochs: int, verbose: int, place: Placement, path: Path | None,
                 watch: Watch, phase: str | None):
        self.params, self.epochs, self.verbose, self.place = params, epochs, verbose, place
        self.path, self.watch, self.phase = path, watch, phase
        self.frames, self.sizes = [fit_df, val_df, test_df], (n_users, n_movies)
        # ``watch`` sees the selection run under its own name, the others under none.
        self.watch_run = "selection" if phase == "selection" else None
        # The rating objective learns ratings centred on their mean; the others learn labels.
        self.mu = 0.0 if params.ranks else float(fit_df[RATING_COL].to_numpy(np.float64).mean())
        self.fit_users, self.fit_movies = ids_of(fit_df)
        self.targets = fit_df[RATING_COL].to_numpy(np.float32) - np.float32(self.mu)
        self.sampler = (NegativeSampler(self.fit_users, self.fit_movies, n_users, n_movies,
                                        params.negative_sampling) if params.ranks else None)
        self.centred, self.loop = setup(params, n_users, n_movies, place, self.sampler)
        self.scores = Scores(self.loop, self.centred, fit_df, val_df, test_df, self.mu, params,
                             n_users, n_movies)
        # One shuffle per epoch, as model.fit(shuffle=True) does, from the run's seed; the same
        # generator draws the negatives, so its state is all a resumed run needs to redraw them.
        self.rng = np.random.default_rng(params.seed)
        self.state = list(self.centred.variables) + self.loop.state_variables()
        self.rows: list[list] = []
        self.best = BestEpoch()
        self.fit_seconds = self.seconds_before = 0.0
        self.n_examples = 0
        self.digest: str | None = None
        self.start = time.perf_counter()

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.scores.columns)

    def seconds(self) -> float:
        """The run's wall time so far, the killed runs' before this one included."""
        return self.seconds_before + time.perf_counter() - self.start

    @property
    def early_stopped(self) -> bool:
        return (self.scores.val is not None and bool(self.rows)
                and len(self.rows) - self.best.epoch >= self.params.patience)

    def wants_epoch(self) -> bool:
        return len(self.rows) < self.epochs and not self.early_stopped

    def restore(self) -> None:
        """Goes on from this run's checkpoint, or under ``multi_worker`` from the chief's,
        if there is one for the same params, data and code; else starts afresh."""
        saved = self._saved()
        if saved is not None:
            self._apply(*saved)
        self.start = time.perf_counter()

    def _saved(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        path = self.path
        if path is None and not self.place.multi_worker:
            return None
        # Only for a checkpoint or the chief's handshake: hashing the data takes a while.
        n_users, n_movies = self.sizes
        self.digest = checkpoint.fingerprint(self.params, self.frames, epochs=self.epochs,
                                             n_users=n_users, n_movies=n_movies)
        saved = checkpoint.load(path, self.digest) if path is not None else None
        if saved is None and path is not None and path.exists() and self.verbose:
            print(f"train: ignoring {path} (other params, data or code, or unreadable)",
                  flush=True)
        if self.place.multi_worker:
            saved = _share_start(self.place, self.digest, saved)
        return saved

    def _apply(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        for i, var in enumerate(self.state):
            var.assign(arrays[f"state_{i}"])
        self.loop.pull()
        self.rows = meta["rows"]
        self.fit_seconds, self.seconds_before = meta["fit_seconds"], meta["seconds"]
        if meta["best_epoch"]:
            self.best = BestEpoch(meta["best_val"], meta["best_epoch"],
                                  [arrays[f"best_{i}"] for i in range(len(self.centred.weights))])
        self.rng.bit_generator.state = meta["rng"]  # where the shuffles had got to
        if self.sampler is not None:
            self.sampler.stats = dataclasses.replace(self.sampler.stats, **meta["negatives"])
        if self.verbose:
            source = self.path or "the chief's checkpoint"
            print(f"train: resuming after epoch {len(self.rows)} from {source}", flush=True)
        self.watch.epoch(self.history(), self.watch_run)

    def run_epoch(self) -> None:
        """Trains, checks and scores the next epoch, and adds its row to the history."""
        params, loop = self.params, self.loop
        epoch = len(self.rows) + 1
        tick = time.perf_counter()
        data = epoch_data(params.objective, self.fit_users, self.fit_movies, self.targets,
                          self.rng, self.sampler, params.negatives)
        self.n_examples = len(data)
        bar = self.watch.progress(f"epoch {epoch}/{self.epochs}", loop.steps_in(len(data)))
        try:
            train_loss = loop.epoch(tf.constant(data.users), tf.constant(data.movies),
                                    tf.constant(data.targets), params.steps_per_execution,
                                    tf.constant(data.negatives), on_steps=bar.update)
        except NonFiniteLoss as exc:
            raise self._diverged(f"the training loss is {exc.value} in epoch {epoch}",
                                 f"within steps {exc.first}-{exc.last} of {exc.n_steps}"
                                 ) from None
        finally:
            bar.close()
        self.fit_seconds += time.perf_counter() - tick
        if not all(np.isfinite(w.numpy()).all() for w in self.centred.weights):
            raise self._diverged(f"the weights are NaN or infinite after epoch {epoch}",
                                 "the training loss stayed finite")
        # Loss = the objective + the L2 terms (at the epoch's final weights), as Keras reports.
        values, criterion, note = self.scores.after_epoch(
            train_loss, loop.penalty(self.fit_users, self.fit_movies))
        self.best.offer(criterion, epoch, self.centred)
        self.rows.append([epoch, *values])
        self.watch.epoch(self.history(), self.watch_run)
        if self.verbose:
            print(f"epoch {epoch}/{self.epochs}: {note} ({time.perf_counter() - tick:.1f} s)",
                  flush=True)

    def _diverged(self, what: str, detail: str) -> DivergedError:
        of = {"selection": " of the early-stopped selection run",
              "refit": " of the refit"}.get(self.phase, "")
        return DivergedError(
            f"train: {what}{of} ({detail}): the run diverged and is stopped, with no model "
            f"saved (try a lower train.learning_rate, now {self.params.learning_rate:g})")

    def save(self) -> None:
        """Checkpoints the run after its latest epoch (the chief, given a checkpoint path)."""
        if self.path is None or not self.place.is_chief:
            return
        arrays = {f"state_{i}": var.numpy() for i, var in enumerate(self.state)}
        if self.best.weights is not None:
            arrays.update({f"best_{i}": w for i, w in enumerate(self.best.weights)})
        sampler = self.sampler
        checkpoint.save(self.path, {
            "fingerprint": self.digest, "rows": self.rows, "fit_seconds": self.fit_seconds,
            "seconds": self.seconds(), "best_val": float(self.best.criterion),
            "best_epoch": self.best.epoch, "rng": self.rng.bit_generator.state,
            "negatives": dataclasses.asdict(sampler.stats) if sampler else None}, arrays)

    def finish(self) -> TrainResult:
        """The result: with a validation part, the model has its best epoch's weights."""
        params, val = self.params, self.scores.val is not None
        if val and self.best.weights is None:  # every epoch's criterion was NaN
            what = f"NDCG@{params.ndcg_k}" if params.ranks else "MSE"
            raise MovieRecError(
                f"train: the validation {what} was not finite in any of the {len(self.rows)} "
                "epochs, so early stopping has no epoch to keep (expected a validation part "
                f"the model can score: check train.val_fraction, now {params.val_fraction:g}, "
                f"and train.learning_rate, now {params.learning_rate:g})")
        if self.early_stopped and self.verbose:
            what = f"NDCG@{params.ndcg_k}" if params.ranks else "MSE"
            print(f"early stop: no better validation {what} for {params.patience} epochs; "
                  f"keeping epoch {self.best.epoch}'s weights", flush=True)
        seconds = self.seconds()
        history = self.history().astype({"epoch": int})
        best_epoch = len(self.rows)
        if val:
            best_epoch = self.best.epoch
            for weight, value in zip(self.centred.weights, self.best.weights, strict=True):
                weight.assign(value)
        fit_df = self.frames[0]
        # Resumed after the last epoch: count what an epoch holds.
        n_examples = self.n_examples or len(fit_df) * objectives.examples_per_rating(
            params.objective, params.negatives)
        spec = dataclasses.replace(self.loop.split.spec, train_mean=self.mu)
        sampler = self.sampler
        return TrainResult(
            model=for_saving(self.centred, spec), spec=spec, history=history,
            train_mean=self.mu, seconds=seconds, fit_seconds=self.fit_seconds,
            samples_per_second=n_examples * len(self.rows) / max(self.fit_seconds, 1e-9),
            best_epoch=best_epoch, n_fit=len(fit_df), examples_per_epoch=n_examples,
            negatives=dataclasses.asdict(sampler.stats) if sampler else None)


def _share_start(place: Placement, digest: str, saved: tuple | None) -> tuple | None:
    """``multi_worker``: the chief's fingerprint and checkpoint, on every task.

    Every task must train on the same params and data, with the same code, from the same
    weights; a worker whose fingerprint differs stops with one line rather than train on
    something else.
    """
    payload = digest.encode() + b"\n" + (checkpoint.to_bytes(*saved) if saved else b"")
    received = distribute.broadcast_bytes(place, payload if place.is_chief else b"")
    chief_digest, _, state = received.partition(b"\n")
    if chief_digest.decode() != digest:
        raise distribute.ClusterError(
            f"worker: params, data or code differ from the chief's (fingerprint {digest[:12]}, "
            f"the chief's {chief_digest.decode()[:12]}); run it on the chief's params.yaml, "
            "prepared data (dvc pull) and code")
    return checkpoint.from_bytes(state) if state else None
