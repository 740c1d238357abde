"""Stage entry points as DVC runs them: bad input is one line on stderr, exit 1, no output."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_stage(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def params_file(tmp_path: Path, **sections) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"data": {"dataset": "imdb"}},
         "error: params: data.dataset = 'imdb' (expected one of synthetic, file, ml-latest-small, "
         "ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m)"),
        ({"data": {"dataset": "file", "path": "missing.csv"}},
         "error: missing.csv: not found (expected a GroupLens ratings.csv, a Kaggle rating.csv, "
         "a ratings.dat, a u.data or a MovieLens release zip)"),
        ({"data": {"synthetic": {"n_ratings": 5000, "seed": -1}}},
         "error: params: data.synthetic.seed = -1 (expected a non-negative integer)"),
    ],
)
def test_ingest_rejects_bad_input_in_one_line_and_writes_nothing(tmp_path, sections, expected):
    params = params_file(tmp_path, **sections)
    out = tmp_path / "out"
    done = run_stage("ingest", "--params", str(params), "--download-dir", str(tmp_path),
                     "--ratings", str(out / "r.parquet"),
                     "--movies", str(out / "m.parquet"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == expected
    assert not out.exists()


def test_preprocess_rejects_a_bad_fraction(tmp_path):
    params = params_file(tmp_path, preprocess={"test_fraction": 1.5})
    done = run_stage("preprocess", "--params", str(params), "--ratings", "r", "--movies", "m",
                     "--train", "t", "--test", "s", "--user-index", "u", "--movie-index", "v",
                     cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: params: preprocess.test_fraction = 1.5 "
                                   "(expected a number strictly between 0 and 1)")


@pytest.mark.slow
def test_ingest_then_preprocess_on_a_small_twin(tmp_path):
    params = params_file(tmp_path, data={"synthetic": {"n_ratings": 3000, "seed": 1}})
    done = run_stage("ingest", "--params", str(params), "--download-dir", ".",
                     "--ratings", "raw/r.parquet",
                     "--movies", "raw/m.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3,000 ratings" in done.stdout
    done = run_stage("preprocess", "--params", str(params), "--ratings", "raw/r.parquet",
                     "--movies", "raw/m.parquet", "--train", "p/train.parquet",
                     "--test", "p/test.parquet", "--user-index", "p/u.parquet",
                     "--movie-index", "p/m.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train 2,400, test 600 ratings" in done.stdout
    # Only the declared outputs: no temporary files left beside them.
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "m.parquet", "test.parquet", "train.parquet", "u.parquet"]


@pytest.mark.slow
def test_train_stage_with_refit_records_the_selection_run(tmp_path):
    params = params_file(tmp_path, data={"synthetic": {"n_ratings": 3000, "seed": 1}},
                         train={"epochs": 4, "val_fraction": 0.2, "patience": 1, "refit": True,
                                "hidden_units": 16, "l2_embeddings": 0.05, "l2_dense": 0.01})
    for name, args in (("ingest", ["--download-dir", ".", "--ratings", "r.parquet",
                                   "--movies", "m.parquet"]),
                       ("preprocess", ["--ratings", "r.parquet", "--movies", "m.parquet",
                                       "--train", "train.parquet", "--test", "test.parquet",
                                       "--user-index", "u.parquet", "--movie-index", "v.parquet"]),
                       ("train", ["--train", "train.parquet", "--test", "test.parquet",
                                  "--user-index", "u.parquet", "--movie-index", "v.parquet",
                                  "--model", "model.keras", "--portable", "portable",
                                  "--live", "live", "--metrics", "train.json"])):
        done = run_stage(name, "--params", str(params), *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        # A clean log: no TensorFlow start-up chatter, nothing at all on stderr.
        assert done.stderr == "", done.stderr
    # Without a GPU, one line in the project's words says so (a GPU machine prints none).
    import tensorflow as tf

    no_gpu = not tf.config.list_physical_devices("GPU")
    assert done.stdout.startswith("train: no GPU found, training on the CPU\n") == no_gpu
    summary = yaml.safe_load((tmp_path / "train.json").read_text())
    selection = summary["selection"]
    assert summary["n_fit"] == summary["n_train"] == 2400  # the refit used every train rating
    assert selection["n_fit"] == 1920  # the selection run held 20% out
    assert summary["epochs"] == summary["best_epoch"] == selection["best_epoch"]
    assert selection["best_epoch"] <= selection["epochs_run"] <= 4
    assert "refit: early stopping chose" in done.stdout


# A diverged run is an error: one line, exit 1, and no output written as if it had succeeded.

@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    """A prepared small twin (ingest, preprocess) for train stage runs."""
    cwd = tmp_path_factory.mktemp("split")
    params = params_file(cwd, data={"synthetic": {"n_ratings": 3000, "seed": 1}})
    for name, args in (("ingest", ["--download-dir", ".", "--ratings", "r.parquet",
                                   "--movies", "m.parquet"]),
                       ("preprocess", ["--ratings", "r.parquet", "--movies", "m.parquet",
                                       "--train", "train.parquet", "--test", "test.parquet",
                                       "--user-index", "u.parquet", "--movie-index", "v.parquet"])):
        done = run_stage(name, "--params", str(params), *args, cwd=cwd)
        assert done.returncode == 0, done.stderr
    return cwd


def _train_args(split: Path) -> list[str]:
    """The train stage's arguments: the prepared split's inputs, the pipeline's outputs."""
    return ["--train", str(split / "train.parquet"), "--test", str(split / "test.parquet"),
            "--user-index", str(split / "u.parquet"), "--movie-index", str(split / "v.parquet"),
            "--model", "models/model.keras", "--portable", "models/portable", "--live", "dvclive",
            "--metrics", "metrics/train.json", "--checkpoint-dir", "checkpoints"]


def _assert_failed_in_one_line_and_wrote_nothing(done, cwd, pattern):
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(pattern, lines[0]), done.stderr
    for output in ("models/model.keras", "metrics/train.json", "dvclive/metrics.json",
                   "dvclive/plots"):
        assert not (cwd / output).exists(), output


@pytest.mark.slow
def test_a_diverged_train_stage_fails_in_one_line_and_writes_nothing(small_split, tmp_path):
    # As `dvc exp run -S train.learning_rate=1000 -S train.epochs=2` runs it.
    params = params_file(tmp_path, train={"hidden_units": 16, "learning_rate": 1000,
                                          "epochs": 2})
    done = run_stage("train", "--params", str(params), *_train_args(small_split), cwd=tmp_path)
    _assert_failed_in_one_line_and_wrote_nothing(
        done, tmp_path, r"error: train: the training loss is (nan|inf) in epoch 1 \(within steps "
        r"1-\d+ of \d+\): the run diverged and is stopped, with no model saved \(try a "
        r"lower train\.learning_rate, now 1000\)")
    assert not (tmp_path / "checkpoints").exists() or not any(
        (tmp_path / "checkpoints").iterdir())


# The train stage, with every call into TensorFlow of its second epoch returning a NaN loss.
DIVERGES_IN_EPOCH_2 = """
import runpy, sys
import movierec.core.quiet_start  # first, as in the stage: no TensorFlow chatter on stderr
from movierec.train.steps import TrainLoop

real_epoch, real_run, epochs = TrainLoop.epoch, TrainLoop.run_steps, []

def epoch(self, *args, **kwargs):
    epochs.append(1)
    return real_epoch(self, *args, **kwargs)

def run_steps(self, *args):
    out = real_run(self, *args)
    return out * float("nan") if len(epochs) >= 2 else out

TrainLoop.epoch, TrainLoop.run_steps = epoch, run_steps
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_train_stage_diverged_after_an_epoch_leaves_no_curves_of_it(small_split, tmp_path):
    cwd = tmp_path
    params = params_file(cwd, train={"hidden_units": 16, "epochs": 3})
    done = subprocess.run([sys.executable, "-c", DIVERGES_IN_EPOCH_2,
                           str(ROOT / "stages" / "train.py"), "--params", str(params),
                           *_train_args(small_split)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert "epoch 1/3:" in done.stdout  # DVCLive had logged it
    _assert_failed_in_one_line_and_wrote_nothing(
        done, cwd, r"error: train: the training loss is nan in epoch 2 \(within steps .*")
    # Only the last finished epoch's checkpoint: a rerun resumes there and diverges again.
    assert sorted(p.name for p in (cwd / "checkpoints").iterdir()) == ["train.npz"]


def test_recommend_rejects_bad_params_in_one_line_and_writes_nothing(tmp_path):
    params = params_file(tmp_path, recommend={"n": 0})
    out = tmp_path / "top_n.parquet"
    done = run_stage("recommend", "--params", str(params), "--model", "m.keras", "--train", "t",
                     "--user-index", "u", "--movie-index", "v", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: params: recommend.n = 0 (expected an integer >= 1)"
    assert not out.exists()


# Library code with a bare ``except:`` (TensorFlow's DType.max, for one) can catch the exception
# a stop signal raises and turn it into another error, or swallow it and go on.
SWALLOWED = """
import os, signal, time
from movierec.core.stage import raise_if_stopped, run_stage

def main():
    try:
        os.kill(os.getpid(), signal.{sig})
        time.sleep(5)
    except:  # noqa: E722
        {then}
    raise_if_stopped()
    print("carried on")

run_stage(main)
"""


@pytest.mark.parametrize(("sig", "code", "line"), [("SIGTERM", 143, "error: terminated"),
                                                   ("SIGINT", 130, "error: interrupted")])
@pytest.mark.parametrize("then", ["raise TypeError('Cannot find maximum value')", "pass"])
def test_a_swallowed_stop_signal_still_stops_the_stage(sig, code, line, then):
    done = subprocess.run([sys.executable, "-c", SWALLOWED.format(sig=sig, then=then)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (code, line, "")
