import math

import numpy as np
import pytest

from movierec.evaluate.metrics import mae, mse, per_star, rating_metrics, rmse


def test_known_answers():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.0, 3.0, 1.0, 4.5])
    # errors 0, 1, -2, 0.5 -> squared 0, 1, 4, 0.25
    assert mse(y_true, y_pred) == pytest.approx(5.25 / 4)
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt(5.25 / 4))
    assert mae(y_true, y_pred) == pytest.approx(3.5 / 4)


def test_perfect_prediction_is_zero():
    y = np.array([0.5, 5.0, 3.5])
    assert mse(y, y) == 0.0
    assert mae(y, y) == 0.0


def test_rating_metrics_global_mean_baseline():
    y_true = np.array([3.0, 5.0, 4.0, 4.0])
    report = rating_metrics(y_true, np.array([3.0, 5.0, 4.0, 4.0]), train_mean=4.0)
    assert report["mse"] == 0.0
    assert report["n_test"] == 4
    # the baseline predicts 4.0 everywhere: errors -1, 1, 0, 0
    assert report["global_mean"]["mse"] == pytest.approx(0.5)
    assert report["global_mean"]["mae"] == pytest.approx(0.5)
    assert "bias_baseline" not in report


def test_rating_metrics_reports_the_bias_baseline_when_given():
    y_true = np.array([3.0, 5.0, 4.0, 4.0])
    report = rating_metrics(y_true, y_true, 4.0, bias_pred=np.array([3.0, 4.0, 4.0, 5.0]))
    # errors 0, -1, 0, 1
    assert report["bias_baseline"] == {"mse": pytest.approx(0.5), "rmse": pytest.approx(0.5**0.5),
                                       "mae": pytest.approx(0.5)}


def test_per_star():
    rows = per_star(np.array([1.0, 1.0, 5.0]), np.array([2.0, 1.0, 4.0]))
    assert rows == [
        {"rating": 1.0, "count": 2, "mean_prediction": 1.5, "rmse": pytest.approx(math.sqrt(0.5))},
        {"rating": 5.0, "count": 1, "mean_prediction": 4.0, "rmse": 1.0},
    ]


@pytest.mark.parametrize(("a", "b"), [([1.0, 2.0], [1.0]), ([], [])])
def test_mismatched_or_empty_inputs_are_refused(a, b):
    with pytest.raises(ValueError, match="received"):
        mse(np.array(a), np.array(b))
