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
import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import layers

from movierec.core.files import atomic_dir
from movierec.data.sparse import Seen, csr_take
from movierec.nets.keras_model import (
    TRAIN_MEAN_LAYER,
    build_model,
    dense_of,
    save_model,
    tables_of,
)
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


def export(path: str | Path, spec: NetSpec, weights: dict[str, np.ndarray],
           user_ids: np.ndarray, movie_ids: np.ndarray, seen: Seen) -> None:
    """Writes the portable folder at ``path`` (atomically, byte-reproducibly): the model over
    the users and movies with train ratings, their train pairs, and the companion.

    The id tables are in ascending id order and each user's train movies in index order, so the
    pairs come out sorted by user id, then movie id, as the companion's lookups expect.
    """
    users, movies = seen.users_in_train(), np.flatnonzero(seen.in_train)
    model = portable_model(spec, weights, user_ids, movie_ids, users, movies)
    indptr, movie_rows = csr_take(seen.indptr, seen.movies, users)
    # MovieLens ids fit in int32: half the memory and the file of int64 at ML-20M's 16M pairs.
    arrays = {"user_ids": np.asarray(user_ids, np.int32)[users], "indptr": indptr,
              "movie_ids": np.asarray(movie_ids, np.int32)[movie_rows]}
    with atomic_dir(path) as folder:
        save_model(model, None, folder / MODEL_FILE)
        _save_npz(folder / SEEN_FILE, arrays)
        shutil.copyfile(COMPANION_SOURCE, folder / COMPANION_FILE)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` without its time stamps (the same arrays give the same bytes), each array
    written straight into the archive."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(entry, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)
