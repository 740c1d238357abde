"""What the service reads from dvc.lock: the outputs' md5s, whether the recommend stage ran on the
current model, and nothing at all from a file caught half-written."""

from pathlib import Path

import yaml

from movierec.serve.lock import read_lock

NAMES = {"model": "models/model.keras", "train": "data/prepared/train.parquet",
         "user_index": "data/prepared/users.parquet",
         "movie_index": "data/prepared/movies.parquet", "ratings": "data/raw/ratings.parquet",
         "top_n": "data/recommendations/top_n.parquet"}


def _paths(root: Path) -> dict[str, Path]:
    return {name: root / rel for name, rel in NAMES.items()}


def _lock(model: str = "m1", recommended_from: str = "m1") -> dict:
    def entry(name, md5):
        return {"path": NAMES[name], "hash": "md5", "md5": md5}

    prepared = ("train", "user_index", "movie_index")
    return {"schema": "2.0", "stages": {
        "ingest": {"params": {"params.yaml": {"data.dataset": "synthetic"}},
                   "outs": [entry("ratings", "r")]},
        "preprocess": {"outs": [entry(n, n) for n in prepared]},
        "train": {"outs": [entry("model", model)]},
        "recommend": {"deps": [entry("model", recommended_from), *(entry(n, n) for n in prepared)],
                      "outs": [entry("top_n", f"lists-of-{recommended_from}")]},
    }}


def _write(root: Path, text: str) -> None:
    (root / "dvc.lock").write_text(text)


def test_a_complete_lock_gives_every_md5_and_the_data(tmp_path):
    _write(tmp_path, yaml.safe_dump(_lock()))
    state = read_lock(tmp_path, _paths(tmp_path))
    assert state.consistent and state.md5["model"] == "m1" and state.md5["top_n"] == "lists-of-m1"
    assert state.data == {"data.dataset": "synthetic"}


def test_a_new_model_without_its_lists_is_not_consistent(tmp_path):
    _write(tmp_path, yaml.safe_dump(_lock(model="m2", recommended_from="m1")))
    state = read_lock(tmp_path, _paths(tmp_path))
    assert not state.consistent and state.md5["model"] == "m2"


def test_a_file_caught_mid_write_reads_as_nothing(tmp_path):
    text = yaml.safe_dump(_lock())
    cut = text.index("recommend:")
    assert read_lock(tmp_path, _paths(tmp_path)) is None  # no file
    for partial in (text[:cut + len("recommend:\n    deps:\n    - ")],  # an entry still empty
                    text[:len(text) // 2] + "\n  - [",  # not YAML yet
                    "stages:\n  recommend:\n    deps:\n    -\n"):
        _write(tmp_path, partial)
        assert read_lock(tmp_path, _paths(tmp_path)) is None, partial
    _write(tmp_path, text[:cut])  # whole stages so far, recommend not yet written
    state = read_lock(tmp_path, _paths(tmp_path))
    assert state is not None and not state.consistent
