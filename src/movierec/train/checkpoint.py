"""Per-epoch training checkpoints, so that a killed train stage resumes where it stopped.

One ``.npz`` file per training run holds every array the run needs to go on exactly as if it
had never stopped (the model's variables, the optimiser's state, the best epoch's weights) and,
as a JSON string, its history and counters. It is written atomically after every epoch, and is
read back only if its fingerprint (the params, a hash of the data and a hash of the training
code) matches the run's, so a checkpoint left by other params, other data or other code (a run
killed, the code edited, the run started again) is ignored, never resumed. No pickle: arrays
are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.core.files import atomic_path

_META = "__meta__"
# The training code: the package's own __init__ and the folders of movierec.train and of every
# layer it may import (pyproject.toml's layers contract), which are also the train stage's code
# deps in dvc.yaml. The layout of the checkpointed state is this code's, so it needs no version.
_PACKAGE = Path(__file__).resolve().parents[1]
CODE = ("__init__.py", "core", "data", "nets", "ranking", "train")


@functools.cache
def code_digest() -> str:
    """A digest of the training code's source: every ``.py`` file of :data:`CODE` under the
    ``movierec`` package this module was loaded from (a checkout or an installed package), by
    relative path. Read once per process, so it is the code the process runs."""
    h = hashlib.blake2b(digest_size=16)
    files = [_PACKAGE / name for name in CODE if (_PACKAGE / name).is_file()]
    files += [p for name in CODE if (_PACKAGE / name).is_dir()
              for p in (_PACKAGE / name).rglob("*.py")]
    for path in sorted(files, key=lambda p: p.relative_to(_PACKAGE).as_posix()):
        source = path.read_bytes()
        for part in (path.relative_to(_PACKAGE).as_posix().encode(), source):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def fingerprint(params: object, frames: list[pd.DataFrame | None], **extra: object) -> str:
    """A digest of the run's params, its data frames (values, in order), ``extra`` and the
    training code (:func:`code_digest`)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"params": dataclasses.asdict(params), "code": code_digest(), **extra},
                        sort_keys=True, default=str).encode())
    for df in frames:
        if df is None:
            h.update(b"none")
            continue
        for name in df.columns:
            h.update(name.encode())
            h.update(np.ascontiguousarray(df[name].to_numpy()).tobytes())
    return h.hexdigest()


def to_bytes(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """A checkpoint as bytes: an .npz of ``arrays`` with ``meta`` as JSON (what :func:`save`
    writes, and what a chief sends its workers)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays})
    return buffer.getvalue()


def from_bytes(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The (meta, arrays) of :func:`to_bytes`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return json.loads(arrays.pop(_META).tobytes().decode()), arrays


def save(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``meta`` (JSON-serialisable) and ``arrays`` to ``path`` atomically."""
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        Path(tmp).write_bytes(to_bytes(meta, arrays))


def load(path: Path, expected_fingerprint: str) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The checkpoint at ``path`` if it exists, is readable and has the expected fingerprint."""
    if not path.is_file():
        return None
    try:
        meta, arrays = from_bytes(path.read_bytes())
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable: start afresh (atomic writes make this unlikely)
    if meta.get("fingerprint") != expected_fingerprint:
        return None
    return meta, arrays
