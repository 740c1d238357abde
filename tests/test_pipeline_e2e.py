"""The whole pipeline as a user drives it: dvc repro, no-op rerun, exp run, diffs and plots.

Runs in a copy of the project inside a temporary git repository, on a tiny synthetic twin.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore",
                 ".dvc/config", "stages", "src", "data/external/README.md"]

pytestmark = pytest.mark.e2e


def _env(repo: Path) -> dict:
    env = dict(os.environ)
    # The stage commands say `python`: make it this interpreter, importing the copied package.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    env["DVC_NO_ANALYTICS"] = "1"  # never phone home from a test
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid")
    return env


def run(repo: Path, *cmd: str, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=repo, env={**_env(repo), **(env or {})}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def dvc(repo: Path, *args: str, env: dict | None = None) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args, env=env)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic"]["n_ratings"] = 20_000
    params["train"]["epochs"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "project")
    return repo


def test_repro_runs_every_stage_then_is_a_no_op(repo):
    out = dvc(repo, "repro")
    for stage in ("download", "ingest", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    report = json.loads((repo / "metrics/test.json").read_text())
    assert report["n_test"] == 4_000
    assert report["mse"] < report["global_mean"]["mse"]
    assert report["bias_baseline"]["mse"] < report["global_mean"]["mse"]
    assert report["rmse"] == pytest.approx(report["mse"] ** 0.5)
    for png in ("loss", "mse", "predicted_by_star", "rating_histogram"):
        assert (repo / f"plots/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (repo / "models/model.keras").is_file()

    again = dvc(repo, "repro")
    assert "Running stage" not in again
    assert "up to date" in dvc(repo, "status")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline run")


def test_changing_a_train_key_reruns_train_and_evaluate_only(repo):
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["train"]["learning_rate"] = 0.05
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc(repo, "repro")
        assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
        assert "Running stage 'ingest'" not in out and "Running stage 'preprocess'" not in out
    finally:
        params_file.write_text(original)
        dvc(repo, "repro")  # back to the committed state, restored from the cache


def test_exp_run_and_the_diff_commands(repo):
    out = dvc(repo, "exp", "run", "-S", "train.epochs=2")
    assert "Running stage 'train'" in out and "Running stage 'ingest'" not in out

    params_diff = dvc(repo, "params", "diff")
    assert "train.epochs" in params_diff
    assert params_diff.split("train.epochs")[1].split()[:2] == ["1", "2"]

    metrics = json.loads(dvc(repo, "metrics", "diff", "--json"))
    test_diff = metrics["metrics/test.json"]
    assert set(test_diff) >= {"mse", "rmse", "mae"}
    assert test_diff["mse"]["old"] != test_diff["mse"]["new"]
    assert "metrics/test.json" in dvc(repo, "metrics", "show")

    shown = json.loads(dvc(repo, "plots", "show", "--json"))["data"]
    assert {"loss", "mse", "per_star"} <= set(shown)
    assert {"plots/loss.png", "plots/mse.png", "plots/predicted_by_star.png"} <= set(shown)
    html = dvc(repo, "plots", "show", "-o", "plots_html")
    assert (repo / "plots_html" / "index.html").is_file(), html

    table = dvc(repo, "exp", "show", "--csv")
    assert "train.epochs" in table


def test_own_ratings_file_is_tracked(repo):
    # A user's ratings.csv (here: the twin's own ratings, written out as GroupLens CSV).
    import pandas as pd

    ratings = pd.read_parquet(repo / "data/raw/ratings.parquet")
    own = repo / "data/external/ratings.csv"
    ratings.head(5_000).to_csv(own, index=False)
    out = dvc(repo, "exp", "run", "-S", "data.dataset=file",
              "-S", "data.path=data/external/ratings.csv")
    assert "Running stage 'ingest'" in out
    assert "ingest: file: 5,000 ratings" in out
    assert json.loads((repo / "metrics/test.json").read_text())["n_test"] == 1_000

    # Editing the file makes the pipeline stale from ingest on.
    with own.open("a") as fh:
        fh.write("999999,1,4.0,1112486027\n")
    status = dvc(repo, "status")
    assert "ingest" in status and "data/external/ratings.csv" in status


def test_movielens_release_from_a_local_server(repo, tmp_path):
    # ML-100K's layout (u.data, latin-1 u.item), served from 127.0.0.1 with its checksums
    # overridden for the fixture; switching datasets back and forth downloads it once.
    from movielens_fixtures import FixtureServer, fixture_tables, release_zip, write_overrides

    from movierec.movielens import OVERRIDE_ENV

    ratings, movies = fixture_tables(whole_stars=True)
    with FixtureServer() as server:
        entry = server.serve_release("ml-100k", release_zip("ml-100k", ratings, movies), ratings)
        overrides = write_overrides(tmp_path / "releases.json", {"ml-100k": entry})
        env = {OVERRIDE_ENV: str(overrides)}
        out = dvc(repo, "exp", "run", "-S", "data.dataset=ml-100k", env=env)
        assert "Running stage 'download'" in out
        assert f"ml-100k: {len(ratings)} ratings and 6 users, as published by GroupLens" in out
        assert json.loads((repo / "metrics/test.json").read_text())["n_test"] == round(
            0.2 * len(ratings))
        assert server.routes["/ml-100k.zip"].requests == 1

        dvc(repo, "exp", "run", "-S", "data.dataset=synthetic", env=env)
        dvc(repo, "exp", "run", "-S", "data.dataset=ml-100k", env=env)
        assert server.routes["/ml-100k.zip"].requests == 1  # restored from DVC's cache
