"""What dvc.lock says about the outputs the service reads: which model, which data, and whether
the recommend stage's lists were made from that model (so that the service never pairs a new
model with the previous run's lists while `dvc repro` is half-way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

# The outputs the service loads, by their dvc.yaml `paths` names, and the stage that writes each.
PRODUCERS = {"model": "train", "train": "preprocess", "user_index": "preprocess",
             "movie_index": "preprocess", "ratings": "ingest", "top_n": "recommend"}
# The inputs of the recommend stage that must be those outputs for its lists to match them.
RECOMMEND_READS = ("model", "train", "user_index", "movie_index")


@dataclass(frozen=True)
class LockState:
    """The md5 of each output the service reads (None: not in dvc.lock), the data parameters
    the run used, and whether the recommend stage ran on the current model and data."""

    md5: dict[str, str | None]
    data: dict[str, object]
    consistent: bool

    @property
    def key(self) -> tuple:
        """Equal for two states exactly when the service would load the same files."""
        return tuple(sorted(self.md5.items()))


def _outs(stage: dict) -> dict[str, str]:
    return {entry["path"]: entry.get("md5") for entry in stage.get("outs") or []}


def _deps(stage: dict) -> dict[str, str]:
    return {entry["path"]: entry.get("md5") for entry in stage.get("deps") or []}


def read_lock(root: Path, paths: dict[str, Path]) -> LockState | None:
    """The state ``root/dvc.lock`` records, or None when it cannot be read now: missing (the
    outputs were made without DVC), or caught while DVC rewrites it (not YAML yet, or entries
    still missing their fields); the caller looks again later."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}
        stages = lock.get("stages") or {}
        rel = {name: paths[name].relative_to(root).as_posix() for name in PRODUCERS}
        md5 = {name: _outs(stages.get(stage) or {}).get(rel[name])
               for name, stage in PRODUCERS.items()}
        recommend_deps = _deps(stages.get("recommend") or {})
        data = ((stages.get("ingest") or {}).get("params") or {}).get("params.yaml") or {}
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return None
    consistent = all(md5[name] is not None and recommend_deps.get(rel[name]) == md5[name]
                     for name in RECOMMEND_READS)
    return LockState(md5, dict(data), consistent)
