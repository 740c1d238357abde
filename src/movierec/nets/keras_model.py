"""The tutorial's residual network, in Keras 3.

Main branch: dot product of user and movie embeddings plus a user bias and a movie bias.
Side branch: the two embeddings concatenated -> Dense(hidden) -> elu -> Dense(1).
The two branches are added. The network predicts a rating centred on the training mean; the
saved model wraps it with that mean so that it predicts ratings directly.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers

from movierec.core.columns import MOVIE_IDX_COL, USER_IDX_COL
from movierec.core.config import MODELS
from movierec.core.files import atomic_path

# Prediction-only batch size: it changes speed, never the predictions' values beyond float
# rounding, so it is not a params.yaml knob.
PREDICT_BATCH_SIZE = 8192

USER_INPUT = "user"
MOVIE_INPUT = "movie"


def build_residual_model(n_users: int, n_movies: int, latent_dim: int = 10,
                         hidden_units: int = 400, dropout: float = 0.0) -> keras.Model:
    """Builds the tutorial's network (centred output), layer for layer."""
    return build_model("residual", n_users, n_movies, latent_dim, hidden_units, dropout)


def build_model(kind: str, n_users: int, n_movies: int, latent_dim: int = 10,
                hidden_units: int = 400, dropout: float = 0.0) -> keras.Model:
    """The tutorial's network (``residual``) or one of its two branches alone.

    ``mf``: the main branch, dot product plus biases (matrix factorisation, as the course's
    sibling script). ``deep``: the side branch, concatenate -> Dense -> elu -> Dense(1).
    ``dropout`` > 0 adds a Dropout layer after the side branch's elu.
    """
    if kind not in MODELS:
        raise ValueError(f"build_model: received kind={kind!r} (expected one of "
                         f"{', '.join(MODELS)})")
    for name, value in (("n_users", n_users), ("n_movies", n_movies),
                        ("latent_dim", latent_dim), ("hidden_units", hidden_units)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"build_model: received {name}={value!r} "
                             "(expected a positive Python int)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"build_model: received dropout={dropout!r} (expected [0, 1))")
    u = keras.Input(shape=(1,), dtype="int32", name=USER_INPUT)
    m = keras.Input(shape=(1,), dtype="int32", name=MOVIE_INPUT)
    u_embedding = layers.Embedding(n_users, latent_dim, name="user_embedding")(u)  # (b, 1, K)
    m_embedding = layers.Embedding(n_movies, latent_dim, name="movie_embedding")(m)
    branches = []

    if kind in ("residual", "mf"):  # main branch: u.m + b_u + b_m
        u_bias = layers.Embedding(n_users, 1, name="user_bias")(u)  # (b, 1, 1)
        m_bias = layers.Embedding(n_movies, 1, name="movie_bias")(m)
        x = layers.Dot(axes=2, name="dot")([u_embedding, m_embedding])  # (b, 1, 1)
        x = layers.Add(name="main_sum")([x, u_bias, m_bias])
        branches.append(layers.Flatten(name="main_flat")(x))  # (b, 1)

    if kind in ("residual", "deep"):  # side branch: an MLP over the concatenated embeddings
        y = layers.Concatenate(name="concat")([layers.Flatten(name="user_flat")(u_embedding),
                                               layers.Flatten(name="movie_flat")(m_embedding)])
        y = layers.Dense(hidden_units, name="hidden")(y)
        y = layers.Activation("elu", name="elu")(y)
        if dropout > 0:
            y = layers.Dropout(dropout, name="dropout")(y)
        branches.append(layers.Dense(1, name="side_out")(y))

    out = layers.Add(name="residual_sum")(branches) if len(branches) > 1 else branches[0]
    names = {"residual": "residual_recommender", "mf": "mf_recommender",
             "deep": "deep_recommender"}
    return keras.Model(inputs=[u, m], outputs=out, name=names[kind])


def expected_weight_count(n_users: int, n_movies: int, latent_dim: int, hidden_units: int,
                          kind: str = "residual") -> int:
    """Parameter count by formula: embeddings, plus biases (main branch), plus Dense(2K -> H)
    and Dense(H -> 1) (side branch)."""
    embeddings = (n_users + n_movies) * latent_dim
    biases = n_users + n_movies
    side = (2 * latent_dim * hidden_units + hidden_units) + (hidden_units + 1)
    return embeddings + {"residual": biases + side, "mf": biases, "deep": side}[kind]


def with_offset(centred: keras.Model, train_mean: float) -> keras.Model:
    """Wraps the centred network so that it predicts ratings: output + training mean.

    The mean lives in the graph (a Rescaling layer's offset), so it is saved inside the .keras
    file and a loaded model needs nothing else to predict.
    """
    rating = layers.Rescaling(scale=1.0, offset=float(train_mean), name="add_train_mean")(
        centred.output)
    return keras.Model(inputs=centred.inputs, outputs=rating, name="rating_predictor")


def train_mean_of(model: keras.Model) -> float:
    """Reads back the training mean stored by :func:`with_offset`."""
    return float(model.get_layer("add_train_mean").offset)


SCORE_LAYER = "ranking_score"


def as_scorer(centred: keras.Model, objective: str) -> keras.Model:
    """Wraps a network trained for ranking (``bce``, ``bpr``) for saving: its output is a score
    (for ``bce`` a logit), not a rating, so no mean is added. An identity layer marks it, and
    the model's name records the objective (:func:`objective_of`)."""
    score = layers.Identity(name=SCORE_LAYER)(centred.output)
    return keras.Model(inputs=centred.inputs, outputs=score, name=f"{objective}_scorer")


def predicts_ratings(model: keras.Model) -> bool:
    """True for a rating predictor (:func:`with_offset`), False for a ranking scorer."""
    return any(layer.name == "add_train_mean" for layer in model.layers)


def objective_of(model: keras.Model) -> str:
    """The objective a saved model was trained with: rating, bce or bpr."""
    if predicts_ratings(model):
        return "rating"
    if any(layer.name == SCORE_LAYER for layer in model.layers):
        return model.name.removesuffix("_scorer")
    raise ValueError(f"model {model.name!r} is neither a rating predictor nor a ranking scorer "
                     "(expected a model saved by the train stage)")


def save_model(model: keras.Model, path: str | Path) -> None:
    """Saves atomically and byte-reproducibly: the same weights give the same file.

    Keras stamps the save time into ``metadata.json`` and one zip entry, and writes Python
    object addresses as ``shared_object_id`` in ``config.json``; all three vary from run to run
    with identical weights. They are removed or renumbered so that DVC records the same hash for
    the same model and a fresh clone's ``dvc repro`` leaves dvc.lock unchanged. The temporary
    name keeps the .keras suffix that Keras insists on.
    """
    with atomic_path(path, suffix=".tmp.keras") as tmp:
        model.save(tmp)
        tmp.write_bytes(_reproducible_archive(tmp.read_bytes()))


def _renumber_shared_ids(node: object, ids: dict[int, int]) -> object:
    """Replaces each distinct ``shared_object_id`` by its order of first appearance."""
    if isinstance(node, dict):
        return {k: (ids.setdefault(v, len(ids)) if k == "shared_object_id"
                    else _renumber_shared_ids(v, ids)) for k, v in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_ids(v, ids) for v in node]
    return node


def _reproducible_archive(archive: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared_ids(json.loads(data), {})).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            zout.writestr(fixed, data)
    return out.getvalue()


def load_model(path: str | Path) -> keras.Model:
    """Loads a saved model in Keras' safe mode (no arbitrary code from the file)."""
    return keras.models.load_model(path, safe_mode=True, compile=False)


def model_inputs(df: pd.DataFrame) -> list[np.ndarray]:
    """The (user, movie) index columns shaped (n, 1), as the model's Inputs expect."""
    return [df[USER_IDX_COL].to_numpy(np.int32).reshape(-1, 1),
            df[MOVIE_IDX_COL].to_numpy(np.int32).reshape(-1, 1)]


def predict(model: keras.Model, df: pd.DataFrame) -> np.ndarray:
    """The model's output (predicted ratings, or scores) for the (user_idx, movie_idx) rows."""
    out = model.predict(model_inputs(df), batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(-1)
