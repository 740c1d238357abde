"""A diverged run is an error at the first non-finite loss or weights, keeping nothing of it;
and the stage tells training when to stop through a hook (training never imports the stage)."""

import dataclasses

import numpy as np
import pytest

from movierec.core.config import TrainParams
from movierec.core.errors import MovieRecError
from movierec.data import synthetic
from movierec.data.preprocess import prepare
from movierec.train import checkpoint
from movierec.train.progress import Watch
from movierec.train.scores import Scores
from movierec.train.steps import TrainLoop
from movierec.train.training import DivergedError, train


@pytest.fixture(scope="module")
def tiny_split():
    twin = synthetic.generate(3000, seed=1)
    data = prepare(twin.ratings, twin.movies, test_fraction=0.2, seed=1)
    return data, len(data.users), len(data.movies)


TINY_PARAMS = TrainParams(epochs=2, seed=5, hidden_units=16)


def _recorded_watch(**hooks):
    seen = []
    return seen, Watch(on_epoch=lambda history, run: seen.append(list(history["epoch"])),
                       **hooks)


def test_a_huge_learning_rate_stops_at_the_first_non_finite_loss(tiny_split, tmp_path):
    data, n, m = tiny_split
    params = dataclasses.replace(TINY_PARAMS, learning_rate=1000.0)
    seen, watch = _recorded_watch()
    with pytest.raises(DivergedError, match=r"^train: the training loss is (nan|inf) in epoch 1 "
                       r"\(within steps 1-\d+ of \d+\): the run diverged .* no model saved "
                       r"\(try a lower train\.learning_rate, now 1000\)$") as caught:
        train(data.train, data.test, n, m, params, verbose=0, checkpoint_dir=tmp_path,
              watch=watch)
    assert isinstance(caught.value, MovieRecError)  # the stage prints it as one line
    assert seen == [] and list(tmp_path.iterdir()) == []  # no row, no checkpoint


def _nan_from_epoch(monkeypatch, diverged_epoch):
    """Makes every call into TensorFlow from epoch ``diverged_epoch`` on return a NaN loss."""
    real_epoch, real_run = TrainLoop.epoch, TrainLoop.run_steps
    epochs = []

    def epoch(self, *args, **kwargs):
        epochs.append(1)
        return real_epoch(self, *args, **kwargs)

    def run_steps(self, *args):
        out = real_run(self, *args)
        return out * np.nan if len(epochs) >= diverged_epoch else out
    monkeypatch.setattr(TrainLoop, "epoch", epoch)
    monkeypatch.setattr(TrainLoop, "run_steps", run_steps)


def test_a_later_diverged_epoch_is_neither_shown_nor_checkpointed(tiny_split, tmp_path,
                                                                   monkeypatch):
    data, n, m = tiny_split
    _nan_from_epoch(monkeypatch, 2)
    params = dataclasses.replace(TINY_PARAMS, epochs=3, steps_per_execution=4)
    seen, watch = _recorded_watch()
    with pytest.raises(DivergedError, match=r"loss is nan in epoch 2 \(within steps 1-4 of "):
        train(data.train, data.test, n, m, params, verbose=0, checkpoint_dir=tmp_path,
              watch=watch)
    assert seen == [[1]]  # DVCLive (the stage's watch) never saw epoch 2
    meta, _ = checkpoint.from_bytes((tmp_path / "train.npz").read_bytes())
    assert [row[0] for row in meta["rows"]] == [1]  # epoch 1's checkpoint, not epoch 2's


def test_the_refit_names_itself_when_it_diverges(tiny_split, monkeypatch):
    data, n, m = tiny_split
    params = dataclasses.replace(TINY_PARAMS, val_fraction=0.2, refit=True, epochs=1)
    _nan_from_epoch(monkeypatch, 2)  # the selection run's epoch, then the refit's first
    with pytest.raises(DivergedError, match=r"loss is nan in epoch 1 of the refit \("):
        train(data.train, data.test, n, m, params, verbose=0)


def test_non_finite_weights_after_a_finite_loss_are_a_divergence(tiny_split, monkeypatch):
    data, n, m = tiny_split
    real_push = TrainLoop.push

    def push(self):  # the epoch's last update overflowed a weight
        real_push(self)
        self.split.tables[0].assign(self.split.tables[0] * np.inf)
    monkeypatch.setattr(TrainLoop, "push", push)
    with pytest.raises(DivergedError, match=r"^train: the weights are NaN or infinite after "
                       r"epoch 1 \(the training loss stayed finite\)"):
        train(data.train, data.test, n, m, TINY_PARAMS, verbose=0)


def test_a_validation_score_never_finite_is_one_error_not_a_type_error(tiny_split,
                                                                       monkeypatch):
    data, n, m = tiny_split
    real = Scores.after_epoch

    def nan_validation(self, *args):
        row, _, note = real(self, *args)
        return [*row[:-1], np.nan], np.nan, note
    monkeypatch.setattr(Scores, "after_epoch", nan_validation)
    params = dataclasses.replace(TINY_PARAMS, epochs=3, val_fraction=0.2, patience=2)
    with pytest.raises(MovieRecError, match=r"^train: the validation MSE was not finite in "
                       r"any of the 2 epochs, so early stopping has no epoch to keep"):
        train(data.train, data.test, n, m, params, verbose=0)


# The stage tells training when to stop through a hook: training never imports the stage.

def test_the_stop_check_runs_after_every_checkpointed_epoch(tiny_split, tmp_path):
    data, n, m = tiny_split

    class Stop(Exception):
        pass

    checked = []

    def stop_check():  # what the stage passes: movierec.core.stage.raise_if_stopped
        meta, _ = checkpoint.from_bytes((tmp_path / "train.npz").read_bytes())
        checked.append(len(meta["rows"]))
        if len(checked) == 2:
            raise Stop
    with pytest.raises(Stop):
        train(data.train, data.test, n, m, dataclasses.replace(TINY_PARAMS, epochs=4),
              verbose=0, checkpoint_dir=tmp_path, watch=Watch(stop_check=stop_check))
    assert checked == [1, 2]


def test_training_does_not_import_the_stage_module():
    from support.imports import SRC, closure

    assert "movierec.core.stage" not in closure(SRC / "movierec" / "train" / "training.py")
