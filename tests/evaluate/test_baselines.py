import numpy as np
import pytest

from movierec.evaluate.baselines import fit_biases


def test_recovers_planted_biases_without_noise_or_regularisation():
    rng = np.random.default_rng(0)
    n_users, n_movies, n = 50, 30, 6000
    users, movies = rng.integers(0, n_users, n), rng.integers(0, n_movies, n)
    true_u, true_m = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_movies)
    true_u -= true_u[users].mean()  # identifiable: the global mean absorbs any offset
    ratings = 3.5 + true_u[users] + true_m[movies]
    fit = fit_biases(users, movies, ratings, n_users, n_movies, 0.0, 0.0, epochs=200)
    np.testing.assert_allclose(fit.predict(users, movies), ratings, atol=1e-6)


def test_one_alternating_step_by_hand():
    # Two users, two movies; ratings (u, m, r): (0,0,5), (0,1,3), (1,0,4).
    users, movies = np.array([0, 0, 1]), np.array([0, 1, 0])
    r = np.array([5.0, 3.0, 4.0])
    fit = fit_biases(users, movies, r, 2, 2, reg_user=1.0, reg_movie=2.0, epochs=1)
    mu = 4.0
    b_m = np.array([((5 - mu) + (4 - mu)) / (2 + 2), (3 - mu) / (2 + 1)])
    b_u = np.array([((5 - mu - b_m[0]) + (3 - mu - b_m[1])) / (1 + 2), (4 - mu - b_m[0]) / 2])
    assert fit.mean == mu
    np.testing.assert_allclose(fit.movie, b_m)
    np.testing.assert_allclose(fit.user, b_u)


def test_regularisation_shrinks_rarely_rated_biases_and_unseen_ids_get_zero():
    users, movies = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1])
    r = np.array([5.0, 5.0, 5.0, 1.0])
    loose = fit_biases(users, movies, r, 3, 3, 0.1, 0.1)
    tight = fit_biases(users, movies, r, 3, 3, 100.0, 100.0)
    assert abs(tight.movie[1]) < abs(loose.movie[1])
    assert loose.user[2] == 0.0 and loose.movie[2] == 0.0
    unreg = fit_biases(users, movies, r, 3, 3, 0.0, 0.0)
    assert unreg.user[2] == 0.0 and np.isfinite(unreg.user).all()


def test_rejects_negative_regularisation():
    with pytest.raises(ValueError, match="reg_user=-1"):
        fit_biases(np.array([0]), np.array([0]), np.array([4.0]), 1, 1, reg_user=-1)
