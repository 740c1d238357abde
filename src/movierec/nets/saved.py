"""A saved model's weights, read without TensorFlow.

The ``.keras`` file is a zip of Keras' ``config.json`` and ``model.weights.h5`` plus the
network's spec (``movierec/net.json``). The recommend and evaluate stages and the query
commands need only the weights, which ``nets.scoring`` turns into scores, so they read them
here with h5py instead of starting TensorFlow, whose start-up costs more than their work on
small data. The Keras model stays the one that writes the file; tests check that these arrays
are exactly the weights Keras loads from it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np

from movierec.core.errors import DataError
from movierec.nets.spec import NetSpec

# The spec's entry in the .keras zip, beside Keras' own config.json and weights (Keras reads
# only its own entries, so the file still loads with plain keras.saving.load_model).
SPEC_ENTRY = "movierec/net.json"
CONFIG_ENTRY = "config.json"
WEIGHTS_ENTRY = "model.weights.h5"
# Each layer's variables, in the order Keras creates (and stores) them.
VARIABLE_ORDER = {"embeddings": 0, "kernel": 0, "bias": 1}


def _snake_case(name: str) -> str:
    """A class name as Keras' saving code spells its folder in the weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_folders(config: dict) -> dict[str, str]:
    """{layer name: its folder in model.weights.h5} for a functional model's config.

    Keras stores a functional model's layers by class, not by name, in the order of the
    config's layer list: the first Dense under ``layers/dense``, the next ``layers/dense_1``.
    """
    folders, used = {}, {}
    for layer in config["config"]["layers"]:
        base = _snake_case(layer["class_name"])
        count = used.get(base, 0)
        used[base] = count + 1
        folders[layer["name"]] = f"layers/{base}" + (f"_{count}" if count else "")
    return folders


def load_spec(path: str | Path) -> NetSpec:
    """The spec saved inside a model file by ``keras_model.save_model``."""
    try:
        with zipfile.ZipFile(path) as zf:
            text = zf.read(SPEC_ENTRY)
    except KeyError:
        raise DataError(f"{path}: no {SPEC_ENTRY} inside (expected a model saved by the train "
                        "stage; retrain it with `dvc repro`)") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .keras file ({exc})") from None
    try:
        return NetSpec.from_json(text)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: {SPEC_ENTRY}: {exc}") from None


def read_weights(path: str | Path) -> tuple[NetSpec, dict[str, np.ndarray]]:
    """The spec and every weight of a model saved by the train stage, as float32 NumPy
    named as in ``spec.tables`` and ``spec.dense`` (what ``keras_model.weights_of`` gives)."""
    spec = load_spec(path)
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read(CONFIG_ENTRY))
            blob = zf.read(WEIGHTS_ENTRY)
    except KeyError as exc:
        raise DataError(f"{path}: no {exc.args[0]} inside (expected a .keras model saved by "
                        "the train stage)") from None
    folders = weight_folders(config)
    wanted = [(t.name, "embeddings", None) for t in spec.tables]
    wanted += [(*name.split("/"), shape) for name, shape in spec.dense]
    weights = {}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        for layer, variable, shape in wanted:
            key = f"{folders.get(layer, layer)}/vars/{VARIABLE_ORDER[variable]}"
            name = layer if variable == "embeddings" else f"{layer}/{variable}"
            if layer not in folders or key not in h5:
                raise DataError(f"{path}: no weights for {name} (expected a model whose "
                                f"layers match its {SPEC_ENTRY})")
            array = np.asarray(h5[key], dtype=np.float32)
            if shape is not None and array.shape != tuple(shape):
                raise DataError(f"{path}: {name} has shape {array.shape} (expected "
                                f"{tuple(shape)}, as {SPEC_ENTRY} says)")
            weights[name] = array
    return spec, weights
