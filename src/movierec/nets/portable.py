"""The trained network as a self-contained Keras model: MovieLens ids in, score out.

The train stage's model takes row positions of the run's id tables. The portable model puts
those tables inside it, as ``IntegerLookup`` layers in front of the same network (built from the
same spec), so it answers for raw ``userId`` and ``movieId`` with nothing but Keras: every
layer in it is one of Keras' own, and it loads with ``keras.saving.load_model(path)`` in safe
mode without this package.

An id the model was not trained on (not in the train split) maps to the lookup's
out-of-vocabulary slot, index 0, whose embedding and bias rows are zero: an unknown user gets
the movie's part of the score alone (its bias and its side-branch term for a zero user
vector), the same for every such user; an unknown movie likewise gets the user's part.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import keras
import numpy as np
from keras import layers

from movierec.nets.keras_model import TRAIN_MEAN_LAYER, build_model, dense_of, tables_of
from movierec.nets.spec import USER, NetSpec

USER_ID_INPUT = "userId"
MOVIE_ID_INPUT = "movieId"
USER_LOOKUP = "user_lookup"
MOVIE_LOOKUP = "movie_lookup"
OOV_ROWS = 1  # IntegerLookup's default: one out-of-vocabulary index, 0, before the vocabulary


def portable_model(spec: NetSpec, weights: dict[str, np.ndarray], user_ids: np.ndarray,
                   movie_ids: np.ndarray, users: np.ndarray, movies: np.ndarray) -> keras.Model:
    """A model taking ``{"userId": (b,), "movieId": (b,)}`` int64 MovieLens ids to the trained
    network's output (b, 1): stars for a rating model, the ranking score otherwise.

    ``weights`` are the train stage's (``saved.read_weights``); ``user_ids[i]`` and
    ``movie_ids[j]`` are the MovieLens ids of rows i and j; ``users`` and ``movies`` are the
    rows the vocabulary keeps (those with train ratings), in ascending order.
    """
    users, movies = np.asarray(users, np.int64), np.asarray(movies, np.int64)
    rows = {USER: users, "movie": movies}
    inner = dataclasses.replace(spec, n_users=len(users) + OOV_ROWS,
                                n_movies=len(movies) + OOV_ROWS, dropout=0.0)
    network = build_model(inner)
    for variable, table in zip(tables_of(network, inner), inner.tables, strict=True):
        kept = weights[table.name][rows[table.reads]]
        variable.assign(np.concatenate([np.zeros((OOV_ROWS, table.width), np.float32), kept]))
    for variable, (name, _) in zip(dense_of(network, inner), inner.dense, strict=True):
        variable.assign(weights[name])

    user_id = keras.Input(shape=(), dtype="int64", name=USER_ID_INPUT)
    movie_id = keras.Input(shape=(), dtype="int64", name=MOVIE_ID_INPUT)
    user_row = layers.IntegerLookup(vocabulary=np.asarray(user_ids, np.int64)[users],
                                    name=USER_LOOKUP)(user_id)
    movie_row = layers.IntegerLookup(vocabulary=np.asarray(movie_ids, np.int64)[movies],
                                     name=MOVIE_LOOKUP)(movie_id)
    as_column = [layers.Reshape((1,), name=f"{who}_column")(x)
                 for who, x in (("user", user_row), ("movie", movie_row))]
    out = network(as_column)
    if spec.predicts_ratings:
        out = layers.Rescaling(scale=1.0, offset=float(spec.train_mean),
                               name=TRAIN_MEAN_LAYER)(out)
    name = "rating_predictor" if spec.predicts_ratings else f"{spec.objective}_scorer"
    return keras.Model({USER_ID_INPUT: user_id, MOVIE_ID_INPUT: movie_id}, out,
                       name=f"portable_{name}")


def vocabulary(model: keras.Model, lookup: str) -> np.ndarray:
    """The ids a portable model knows, in the order of its rows after the OOV slot."""
    return np.asarray(model.get_layer(lookup).get_vocabulary()[OOV_ROWS:], np.int64)


# The exported folder: the model, the train split's pairs in MovieLens ids (what a user's top-n
# leaves out) and the companion that reads both with Keras and NumPy alone.
MODEL_FILE = "model.keras"
SEEN_FILE = "seen.npz"
COMPANION_FILE = "topn.py"
COMPANION_SOURCE = Path(__file__).with_name("portable_topn.py")


def write_portable(folder: Path, model: keras.Model, seen_user_ids: np.ndarray,
                   indptr: np.ndarray, seen_movie_ids: np.ndarray) -> None:
    """Writes the portable model, ``seen.npz`` (ascending user ids, CSR offsets, movie ids)
    and the companion into ``folder`` (an empty folder, e.g. ``files.atomic_dir``'s)."""
    model.save(folder / MODEL_FILE)
    np.savez(folder / SEEN_FILE, user_ids=np.asarray(seen_user_ids, np.int64),
             indptr=np.asarray(indptr, np.int64), movie_ids=np.asarray(seen_movie_ids, np.int64))
    shutil.copyfile(COMPANION_SOURCE, folder / COMPANION_FILE)
