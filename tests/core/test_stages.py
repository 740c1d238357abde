"""Stage entry points as DVC runs them: bad input is one line on stderr, exit 1, no output."""

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
                                  "--model", "model.keras", "--live", "live",
                                  "--metrics", "train.json"])):
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
