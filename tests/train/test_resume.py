"""A killed training run resumes from its last completed epoch and ends as if never stopped."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from movierec.core.config import TrainParams
from movierec.data.preprocess import prepare
from movierec.train import checkpoint
from movierec.train.training import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(twin_30k):
    return prepare(twin_30k.ratings, twin_30k.movies, test_fraction=0.2, seed=1)


# Early stopping, refit, a penalty and dropout: every piece of state a resumed run must restore.
PARAMS = TrainParams(epochs=5, seed=5, hidden_units=16, val_fraction=0.2, patience=2,
                     refit=True, l2_embeddings=0.05, dropout=0.2)


def _same(a, b):
    np.testing.assert_array_equal(a.history.to_numpy(), b.history.to_numpy())
    assert a.selection == b.selection
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(data):
    return train(data.train, data.test, len(data.users), len(data.movies), PARAMS, verbose=0)


def _killed_then_resumed(data, params, folder, monkeypatch, kill_after):
    """Trains until the ``kill_after``-th checkpoint is written, dies, then trains again."""
    n, m = len(data.users), len(data.movies)
    saves = []
    real_save = checkpoint.save

    def save_then_die(path, meta, arrays):
        real_save(path, meta, arrays)
        saves.append(path.name)
        if len(saves) == kill_after:
            raise Killed
    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train(data.train, data.test, n, m, params, verbose=0, checkpoint_dir=folder)
    monkeypatch.setattr(checkpoint, "save", real_save)
    return train(data.train, data.test, n, m, params, verbose=0, checkpoint_dir=folder)


# The selection run here has 5 epochs (then refit 4): killed after its first, after its last
# (done, refit not begun) and in the middle of the refit.
@pytest.mark.parametrize("kill_after", [1, 5, 7])
@pytest.mark.slow
def test_resumed_run_ends_exactly_as_an_uninterrupted_one(data, uninterrupted, tmp_path,
                                                          monkeypatch, kill_after):
    _same(_killed_then_resumed(data, PARAMS, tmp_path, monkeypatch, kill_after), uninterrupted)


# A ranking objective: bce's negatives come from the checkpointed generator, so a resumed run
# draws exactly the negatives the killed one would have drawn (and counts the same redraws);
# softmax's pools are keyed on the checkpointed step. Killed in the selection run and in the
# refit.
RANKING = dataclasses.replace(PARAMS, objective="bce", negatives=2,
                              negative_sampling="popularity", epochs=3, ndcg_users=200)
SOFTMAX = dataclasses.replace(RANKING, objective="softmax", negatives=64, dropout=0.0,
                              optimizer="adam", table_updates="sparse", learning_rate=0.01)


@pytest.mark.parametrize("params,kill_after", [(RANKING, 4), (SOFTMAX, 1)],
                         ids=["bce-refit", "softmax-selection"])
@pytest.mark.slow
def test_ranking_run_resumes_exactly(data, tmp_path, monkeypatch, params, kill_after):
    whole = train(data.train, data.test, len(data.users), len(data.movies), params, verbose=0)
    resumed = _killed_then_resumed(data, params, tmp_path, monkeypatch, kill_after)
    _same(resumed, whole)
    if params.objective == "bce":
        assert resumed.negatives == whole.negatives and whole.negatives["rejected"] > 0


@pytest.mark.slow
def test_checkpoint_of_other_params_is_ignored(data, tmp_path, capsys):
    n, m = len(data.users), len(data.movies)
    plain = dataclasses.replace(PARAMS, refit=False, epochs=2)
    train(data.train, data.test, n, m, plain, verbose=0, checkpoint_dir=tmp_path)
    other = dataclasses.replace(plain, learning_rate=0.05)
    again = train(data.train, data.test, n, m, other, verbose=1, checkpoint_dir=tmp_path)
    assert "ignoring" in capsys.readouterr().out
    _same(again, train(data.train, data.test, n, m, other, verbose=0))


# A run killed, the code changed, the run started again: it must not resume under the new code.

@pytest.mark.slow
def test_checkpoint_of_other_code_is_ignored(data, tmp_path, monkeypatch, capsys):
    n, m = len(data.users), len(data.movies)
    plain = dataclasses.replace(PARAMS, refit=False, epochs=2)
    saves = []
    real_save = checkpoint.save

    def save_then_die(path, meta, arrays):
        real_save(path, meta, arrays)
        saves.append(path.name)
        raise Killed
    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train(data.train, data.test, n, m, plain, verbose=0, checkpoint_dir=tmp_path)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert saves == ["train.npz"]
    monkeypatch.setattr(checkpoint, "code_digest", lambda: "the code after an edit")
    again = train(data.train, data.test, n, m, plain, verbose=1, checkpoint_dir=tmp_path)
    out = capsys.readouterr().out
    assert f"train: ignoring {tmp_path / 'train.npz'} (other params, data or code" in out
    assert "resuming" not in out and "epoch 1/2:" in out  # started afresh
    _same(again, train(data.train, data.test, n, m, plain, verbose=0))


def _package_copy(tmp_path):
    copy = tmp_path / "movierec"
    shutil.copytree(ROOT / "src" / "movierec", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_code_digest_covers_the_training_code_only(tmp_path, monkeypatch):
    copy = _package_copy(tmp_path)
    monkeypatch.setattr(checkpoint, "_PACKAGE", copy)

    def digest():
        return checkpoint.code_digest.__wrapped__()  # not the process's cached one
    before = digest()
    assert digest() == before
    serve = next((copy / "serve").glob("*.py"))  # not training code: no stale checkpoint
    serve.write_text(serve.read_text() + "\n# edited\n")
    assert digest() == before
    for layer in ("train", "nets", "data", "core", "ranking"):
        edited = copy / layer / "__init__.py"
        original = edited.read_text()
        edited.write_text(original + "\n# edited\n")
        assert digest() != before, layer
        edited.write_text(original)
    (copy / "train" / "extra.py").write_text("X = 1\n")  # a new module counts too
    assert digest() != before


def test_code_digest_covers_what_the_train_stage_depends_on():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    code = {d.removeprefix("src/movierec/").rstrip("/") for d in stage["deps"]
            if d.startswith("src/movierec/")}
    assert code == set(checkpoint.CODE)


# The real stage, killed by a signal while it trains.

def _stage(name, params, cwd, *args, wait=True):
    cmd = [sys.executable, str(ROOT / "stages" / f"{name}.py"), "--params", str(params), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


TRAIN_ARGS = ["--train", "train.parquet", "--test", "test.parquet", "--user-index", "u.parquet",
              "--movie-index", "v.parquet", "--model", "out/model.keras",
              "--portable", "out/portable", "--live", "live", "--metrics", "out/train.json",
              "--checkpoint-dir", "ckpt"]


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory):
    """A prepared small twin and params for a train stage of many short epochs."""
    cwd = tmp_path_factory.mktemp("stage")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["synthetic"] = {"n_ratings": 20_000, "seed": 1}
    raw["train"].update(epochs=12, hidden_units=16, val_fraction=0.1, patience=20,
                        refit=True)
    params = cwd / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    _stage("ingest", params, cwd, "--download-dir", ".", "--ratings", "r.parquet",
           "--movies", "m.parquet")
    _stage("preprocess", params, cwd, "--ratings", "r.parquet", "--movies", "m.parquet",
           "--train", "train.parquet", "--test", "test.parquet", "--user-index", "u.parquet",
           "--movie-index", "v.parquet")
    reference = _stage("train", params, cwd, *TRAIN_ARGS)
    assert not (cwd / "ckpt").exists()  # removed once the outputs are in place
    return cwd, params, {**_files(cwd, "out"), **_files(cwd, "live")}, reference


def _files(cwd, folder):
    """Every file under ``folder`` (the outputs, the portable folder's included; the DVCLive
    log's per-epoch metrics and curves) by relative path."""
    return {str(p.relative_to(cwd)): p.read_bytes() for p in sorted((cwd / folder).rglob("*"))
            if p.is_file()}


def _kill_when(proc, path, sig, since):
    """Sends ``sig`` once the stage has written ``path`` (a checkpoint) after ``since`` (a
    time.time()); returns the stage's stderr."""
    deadline = time.monotonic() + 240
    while not (path.exists() and path.stat().st_mtime > since):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], stderr
    return stderr


@pytest.mark.slow
def test_killed_train_stage_leaves_no_output_and_resumes(stage_dir):
    # Killed twice while it selects the epoch count: by SIGTERM, then, resumed, by SIGINT once
    # it has checkpointed a further epoch; the second resumption runs to the end.
    cwd, params, reference, _ = stage_dir
    shutil.rmtree(cwd / "out")
    for sig in (signal.SIGTERM, signal.SIGINT):
        started = time.time()
        proc = _stage("train", params, cwd, *TRAIN_ARGS, wait=False)
        stderr = _kill_when(proc, cwd / "ckpt" / "select.npz", sig, started)
        # No model, history or metrics, and no temporary file: only whole checkpoints.
        assert not (cwd / "out").exists() or list((cwd / "out").iterdir()) == [], stderr
        assert {p.name for p in (cwd / "ckpt").iterdir()} <= {"select.npz", "refit.npz"}
    resumed = _stage("train", params, cwd, *TRAIN_ARGS)
    assert "resuming after epoch" in resumed.stdout
    # Determinism across processes: the resumed run's model file, curves and metrics are the
    # uninterrupted run's, byte for byte (so are its predictions), and so is the DVCLive log,
    # which the resumed run replays from the checkpoint before going on.
    assert {**_files(cwd, "out"), **_files(cwd, "live")} == reference
    assert not (cwd / "ckpt").exists()


@pytest.mark.slow
def test_ingest_killed_at_any_moment_leaves_old_or_new_outputs_whole(tmp_path):
    # Previous outputs from another seed; then runs for a new seed killed at growing delays.
    # Every file must be the previous one or the new one, complete, and nothing else may exist.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = tmp_path / "params.yaml"
    args = ["--download-dir", ".", "--ratings", "out/r.parquet", "--movies", "out/m.parquet"]

    def run(seed, wait=True):
        raw["data"]["synthetic"] = {"n_ratings": 600_000, "seed": seed}
        params.write_text(yaml.safe_dump(raw))
        return _stage("ingest", params, tmp_path, *args, wait=wait)

    run(1)
    old = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    run(2)
    new = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert old.keys() == new.keys() == {"r.parquet", "m.parquet"} and old != new
    seen = set()
    for delay in (0.3, 0.8, 1.3, 1.8, 2.3, 2.8):
        for name, data in old.items():
            (tmp_path / "out" / name).write_bytes(data)
        proc = run(2, wait=False)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        files = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
        assert files.keys() == old.keys(), sorted(files)  # no temporary file left behind
        for name, data in files.items():
            assert data in (old[name], new[name]), name
            seen.add("new" if data == new[name] and data != old[name] else "old")
    assert "old" in seen  # some kills landed before the outputs were replaced
