import numpy as np
import pytest

from movierec.config import TrainParams
from movierec.metrics import mse
from movierec.preprocess import prepare
from movierec.training import HISTORY_COLUMNS, predict, train


@pytest.fixture(scope="module")
def prepared(twin_30k):
    return prepare(twin_30k.ratings, twin_30k.movies, test_fraction=0.2, seed=1)


@pytest.fixture(scope="module")
def runs(prepared):
    params = TrainParams(epochs=3, seed=5)
    n, m = len(prepared.users), len(prepared.movies)
    return [train(prepared.train, prepared.test, n, m, params, verbose=0) for _ in range(2)]


def test_history_has_the_tutorials_curves(runs):
    history = runs[0].history
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3]
    # No regulariser: the loss is the MSE, on both splits.
    np.testing.assert_allclose(history["train_loss"], history["train_mse"], rtol=1e-6)
    np.testing.assert_allclose(history["test_loss"], history["test_mse"], rtol=1e-6)


def test_model_beats_the_global_mean_on_the_twin(runs, prepared):
    y = prepared.test["rating"].to_numpy()
    model_mse = mse(y, predict(runs[0].model, prepared.test))
    baseline = mse(y, np.full(len(y), runs[0].train_mean))
    assert model_mse < 0.85 * baseline, (model_mse, baseline)
    # The stored mean is the training split's, not the whole data's.
    assert runs[0].train_mean == pytest.approx(prepared.train["rating"].mean(), abs=1e-6)


def test_same_params_same_history_and_predictions(runs, prepared):
    a, b = runs
    np.testing.assert_array_equal(a.history.to_numpy(), b.history.to_numpy())
    np.testing.assert_array_equal(predict(a.model, prepared.test), predict(b.model, prepared.test))
