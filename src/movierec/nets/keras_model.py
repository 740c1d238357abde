"""The tutorial's residual network in Keras 3, built from its spec (``movierec.nets.spec``).

Main branch: dot product of user and movie embeddings plus a user bias and a movie bias.
Side branch: the two embeddings concatenated -> Dense(hidden) -> elu -> Dense(1).
The two branches are added. The network predicts a rating centred on the training mean; the
saved model wraps it with that mean so that it predicts ratings directly, and carries its spec.
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
from movierec.core.files import atomic_path
from movierec.nets.saved import SPEC_ENTRY, load_spec
from movierec.nets.spec import MOVIE, USER, NetSpec

# Prediction-only batch size: it changes speed, never the predictions' values beyond float
# rounding, so it is not a params.yaml knob.
PREDICT_BATCH_SIZE = 8192

USER_INPUT = "user"
MOVIE_INPUT = "movie"
TRAIN_MEAN_LAYER = "add_train_mean"
SCORE_LAYER = "ranking_score"


def build_model(spec: NetSpec) -> keras.Model:
    """The network ``spec`` describes, centred (no training mean), layer for layer.

    ``residual``: the dot product of the embeddings plus a user and a movie bias (main
    branch), added to concatenate -> Dense(hidden) -> elu -> Dense(1) (side branch). ``mf``
    and ``deep`` are the main and the side branch alone. With ``dropout`` > 0 a Dropout layer
    follows the elu. Layers and weights are named as ``spec.tables`` and ``spec.dense`` say.
    """
    u = keras.Input(shape=(1,), dtype="int32", name=USER_INPUT)
    m = keras.Input(shape=(1,), dtype="int32", name=MOVIE_INPUT)
    n_rows = {USER: spec.n_users, MOVIE: spec.n_movies}
    feeds = {USER: u, MOVIE: m}
    rows = {t.name: layers.Embedding(n_rows[t.reads], t.width, name=t.name)(feeds[t.reads])
            for t in spec.tables}  # (b, 1, width)
    u_embedding, m_embedding = rows["user_embedding"], rows["movie_embedding"]
    branches = []
    if spec.has_main:  # u.m + b_u + b_m
        x = layers.Dot(axes=2, name="dot")([u_embedding, m_embedding])  # (b, 1, 1)
        x = layers.Add(name="main_sum")([x, rows["user_bias"], rows["movie_bias"]])
        branches.append(layers.Flatten(name="main_flat")(x))  # (b, 1)
    if spec.has_side:  # an MLP over the concatenated embeddings
        y = layers.Concatenate(name="concat")([layers.Flatten(name="user_flat")(u_embedding),
                                               layers.Flatten(name="movie_flat")(m_embedding)])
        y = layers.Dense(spec.hidden_units, name="hidden")(y)
        y = layers.Activation("elu", name="elu")(y)
        if spec.dropout > 0:
            y = layers.Dropout(spec.dropout, name="dropout")(y)
        branches.append(layers.Dense(1, name="side_out")(y))
    out = layers.Add(name="residual_sum")(branches) if len(branches) > 1 else branches[0]
    return keras.Model(inputs=[u, m], outputs=out, name=f"{spec.variant}_recommender")


def tables_of(model: keras.Model, spec: NetSpec) -> list[keras.Variable]:
    """The embedding tables of a model built from ``spec``, in ``spec.tables`` order."""
    return [model.get_layer(t.name).embeddings for t in spec.tables]


def dense_of(model: keras.Model, spec: NetSpec) -> list[keras.Variable]:
    """The dense weights of a model built from ``spec``, in ``spec.dense`` order."""
    out = []
    for name, _ in spec.dense:
        layer, weight = name.split("/")
        out.append(getattr(model.get_layer(layer), weight))
    return out


def weights_of(model: keras.Model, spec: NetSpec) -> dict[str, np.ndarray]:
    """Every weight as float32 NumPy, named as in ``spec.tables`` and ``spec.dense``."""
    names = [t.name for t in spec.tables] + [name for name, _ in spec.dense]
    values = tables_of(model, spec) + dense_of(model, spec)
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values, strict=True)}


def for_saving(centred: keras.Model, spec: NetSpec) -> keras.Model:
    """The model that is saved: a rating model predicts stars (output + the training mean,
    held in the graph by a Rescaling layer's offset, so plain Keras predicts stars too); a
    ranking model outputs its score (for ``bce`` a logit) through an identity layer."""
    if spec.predicts_ratings:
        rating = layers.Rescaling(scale=1.0, offset=float(spec.train_mean),
                                  name=TRAIN_MEAN_LAYER)(centred.output)
        return keras.Model(inputs=centred.inputs, outputs=rating, name="rating_predictor")
    score = layers.Identity(name=SCORE_LAYER)(centred.output)
    return keras.Model(inputs=centred.inputs, outputs=score, name=f"{spec.objective}_scorer")


def save_model(model: keras.Model, spec: NetSpec | None, path: str | Path) -> None:
    """Saves the model and its spec (unless None) atomically and byte-reproducibly: the same
    weights give the same file.

    Keras stamps the save time into ``metadata.json`` and one zip entry, and writes Python
    object addresses as ``shared_object_id`` in ``config.json``; all three vary from run to run
    with identical weights. They are removed or renumbered so that DVC records the same hash for
    the same model and a fresh clone's ``dvc repro`` leaves dvc.lock unchanged. The temporary
    name keeps the .keras suffix that Keras insists on.
    """
    with atomic_path(path, suffix=".tmp.keras") as tmp:
        model.save(tmp)
        tmp.write_bytes(_reproducible_archive(tmp.read_bytes(), spec))


def _renumber_shared_ids(node: object, ids: dict[int, int]) -> object:
    """Replaces each distinct ``shared_object_id`` by its order of first appearance."""
    if isinstance(node, dict):
        return {k: (ids.setdefault(v, len(ids)) if k == "shared_object_id"
                    else _renumber_shared_ids(v, ids)) for k, v in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_ids(v, ids) for v in node]
    return node


def _reproducible_archive(archive: bytes, spec: NetSpec | None) -> bytes:
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
        if spec is not None:
            entry = zipfile.ZipInfo(SPEC_ENTRY, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(entry, spec.to_json())
    return out.getvalue()


def load_model(path: str | Path) -> keras.Model:
    """Loads a saved model in Keras' safe mode (no arbitrary code from the file)."""
    return keras.models.load_model(path, safe_mode=True, compile=False)


def load_net(path: str | Path) -> tuple[keras.Model, NetSpec]:
    """A saved model and its spec."""
    spec = load_spec(path)
    return load_model(path), spec


def model_inputs(df: pd.DataFrame) -> list[np.ndarray]:
    """The (user, movie) index columns shaped (n, 1), as the model's Inputs expect."""
    return [df[USER_IDX_COL].to_numpy(np.int32).reshape(-1, 1),
            df[MOVIE_IDX_COL].to_numpy(np.int32).reshape(-1, 1)]


def predict(model: keras.Model, df: pd.DataFrame) -> np.ndarray:
    """The model's output (predicted ratings, or scores) for the (user_idx, movie_idx) rows."""
    out = model.predict(model_inputs(df), batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(-1)
