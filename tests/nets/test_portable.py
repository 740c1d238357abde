"""The portable model: MovieLens ids in, the trained network's output out, with Keras alone."""

import keras
import numpy as np
import pytest
from support.nets import KINDS, random_model, saved_form, spec_of

from movierec.nets.keras_model import weights_of
from movierec.nets.portable import (
    MOVIE_LOOKUP,
    USER_LOOKUP,
    portable_model,
    vocabulary,
)

N_USERS, N_MOVIES = 9, 13
# MovieLens ids are sparse and large: the lookups must map them, not take them as rows.
USER_IDS = np.arange(N_USERS) * 7 + 100
MOVIE_IDS = np.arange(N_MOVIES) ** 2 + 3
KNOWN_USERS = np.array([0, 2, 3, 5, 8])  # rows with train ratings
KNOWN_MOVIES = np.array([1, 2, 4, 6, 7, 9, 12])


def _ids(users, movies):
    return {"userId": np.asarray(users, np.int64), "movieId": np.asarray(movies, np.int64)}


def _pair_grid():
    users, movies = np.meshgrid(KNOWN_USERS, KNOWN_MOVIES, indexing="ij")
    return users.ravel(), movies.ravel()


@pytest.mark.parametrize("objective", ["rating", "softmax"])
@pytest.mark.parametrize("kind", KINDS)
def test_known_ids_give_the_trained_models_output(kind, objective):
    spec = spec_of(kind, N_USERS, N_MOVIES, train_mean=3.6, objective=objective)
    model = saved_form(spec, seed=1)
    portable = portable_model(spec, weights_of(model, spec), USER_IDS, MOVIE_IDS,
                              KNOWN_USERS, KNOWN_MOVIES)
    users, movies = _pair_grid()
    expected = model.predict([users[:, None], movies[:, None]], verbose=0)
    got = portable.predict(_ids(USER_IDS[users], MOVIE_IDS[movies]), verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vocabulary(portable, USER_LOOKUP), USER_IDS[KNOWN_USERS])
    np.testing.assert_array_equal(vocabulary(portable, MOVIE_LOOKUP), MOVIE_IDS[KNOWN_MOVIES])


def test_an_unknown_id_scores_as_a_zero_row():
    spec = spec_of("residual", N_USERS, N_MOVIES, train_mean=3.6)
    centred = random_model(spec, seed=2)
    weights = weights_of(centred, spec)
    portable = portable_model(spec, weights, USER_IDS, MOVIE_IDS, KNOWN_USERS, KNOWN_MOVIES)
    # By hand: a zero user row leaves the movie bias and the side branch on [0; movie].
    m = 4
    v = weights["movie_embedding"][m]
    hidden = v @ weights["hidden/kernel"][spec.latent_dim:] + weights["hidden/bias"]
    elu = np.where(hidden > 0, hidden, np.expm1(hidden))
    side = elu @ weights["side_out/kernel"][:, 0] + weights["side_out/bias"][0]
    expected = 3.6 + weights["movie_bias"][m, 0] + side
    # A user row with no train rating (1) and an id never seen (5) are both unknown.
    got = portable.predict(_ids([USER_IDS[1], 5], [MOVIE_IDS[m]] * 2), verbose=0)
    np.testing.assert_allclose(got[:, 0], [expected, expected], rtol=1e-5)


def test_it_saves_and_loads_in_safe_mode_with_the_same_outputs(tmp_path):
    spec = spec_of("residual", N_USERS, N_MOVIES, train_mean=3.6)
    model = saved_form(spec, seed=3)
    portable = portable_model(spec, weights_of(model, spec), USER_IDS, MOVIE_IDS,
                              KNOWN_USERS, KNOWN_MOVIES)
    portable.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    users, movies = _pair_grid()
    ids = _ids(USER_IDS[users], MOVIE_IDS[movies])
    np.testing.assert_array_equal(loaded.predict(ids, verbose=0),
                                  portable.predict(ids, verbose=0))


def test_the_folder_is_byte_reproducible_and_holds_the_train_pairs(tmp_path):
    from movierec.data.sparse import Seen
    from movierec.nets.portable import export

    spec = spec_of("residual", N_USERS, N_MOVIES, train_mean=3.6)
    weights = weights_of(random_model(spec, seed=4), spec)
    users = np.array([0, 0, 2, 3, 5, 8, 8, 8])
    movies = np.array([4, 1, 2, 12, 6, 9, 7, 1])
    seen = Seen.from_pairs(users, movies, N_USERS, N_MOVIES)
    for name in ("a", "b"):  # DVC's hash of the folder must not change from run to run
        export(tmp_path / name, spec, weights, USER_IDS, MOVIE_IDS, seen)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["model.keras", "seen.npz", "topn.py"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with np.load(tmp_path / "a" / "seen.npz") as got:
        np.testing.assert_array_equal(got["user_ids"], USER_IDS[[0, 2, 3, 5, 8]])
        np.testing.assert_array_equal(got["indptr"], [0, 2, 3, 4, 5, 8])
        np.testing.assert_array_equal(got["movie_ids"], MOVIE_IDS[[1, 4, 2, 12, 6, 1, 7, 9]])
