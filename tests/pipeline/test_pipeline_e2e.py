"""The whole pipeline as a user drives it: dvc repro, no-op rerun, exp run, diffs and plots.

Runs in a copy of the project inside a temporary git repository, on a tiny synthetic twin.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.pipeline import dvc, env_for, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(trained_project, tmp_path_factory) -> Path:
    """This module's copy of the session's trained project; its tests run in order in it."""
    return trained_project.copy(tmp_path_factory.mktemp("e2e") / "project")


def test_repro_runs_every_stage_then_is_a_no_op(trained_project, repo):
    out = trained_project.repro_log  # the first `dvc repro` of a fresh copy of the project
    for stage in ("download", "ingest", "preprocess", "train", "recommend", "evaluate"):
        assert f"Running stage '{stage}'" in out
    report = json.loads((repo / "metrics/test.json").read_text())
    ranking = report["ranking"]
    assert ranking["k"] == 10 and ranking["users"] > 0
    for name in ("model", "popularity", "biases", "ease"):
        assert set(ranking[name]) == {"precision", "recall", "ndcg", "map", "map_at_k"}
        assert all(0.0 <= v <= 1.0 for v in ranking[name].values())
    ease = ranking["ease_fit"]  # the grid of params.yaml, chosen on the train split's hold-out
    assert list(ease["holdout_ndcg"]) == ["100", "200", "500", "1000", "2000", "5000", "10000",
                                          "20000"]
    assert ease["holdout_ndcg"][f"{ease['lambda']:g}"] == max(ease["holdout_ndcg"].values())
    assert "evaluate: the model's NDCG@10 is" in out and "EASE's: it" in out
    import pandas as pd

    top = pd.read_parquet(repo / "data/recommendations/top_n.parquet")
    train = pd.read_parquet(repo / "data/prepared/train.parquet")
    users = pd.read_parquet(repo / "data/prepared/users.parquet")
    movies = pd.read_parquet(repo / "data/prepared/movies.parquet")
    assert list(top.columns) == ["userId", "rank", "movieId", "score"]
    assert top["userId"].nunique() == train["user_idx"].nunique()
    assert top.groupby("userId")["rank"].apply(list).map(lambda r: r == list(range(1, 11))).all()
    seen = set(zip(users["userId"].to_numpy()[train["user_idx"]],
                   movies["movieId"].to_numpy()[train["movie_idx"]], strict=True))
    assert not seen & set(zip(top["userId"], top["movieId"], strict=True))
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
    # The same model gives a byte-identical top-n file: rerunning recommend in a new process
    # leaves evaluate up to date.
    assert "Running stage 'recommend'" in dvc(repo, "repro", "--force", "--single-item",
                                              "recommend")
    assert "up to date" in dvc(repo, "status")
    assert run(repo, "git", "status", "--porcelain") == ""  # the outputs' hashes are committed


def test_ranking_keys_rerun_only_their_stages(repo):
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["k"] = 5
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc(repo, "repro")
        assert "Running stage 'evaluate'" in out and "Running stage 'recommend'" not in out
        assert json.loads((repo / "metrics/test.json").read_text())["ranking"]["k"] == 5
        params["recommend"]["n"] = 3  # shorter than evaluate.k: one line, exit 1
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env_for(repo),
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode != 0
        assert ("error: data/recommendations/top_n.parquet: lists of at most 3 movies "
                "(expected at least evaluate.k = 5; set recommend.n >= evaluate.k)") in done.stderr
    finally:
        params_file.write_text(original)
        dvc(repo, "repro")


def movierec(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "movierec", *args], cwd=repo, env=env_for(repo),
                          capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_recommend_and_similar_commands(repo):
    import pandas as pd

    top = pd.read_parquet(repo / "data/recommendations/top_n.parquet")
    user = int(top["userId"].iloc[0])
    expected = top[top["userId"] == user]
    out = json.loads(movierec(repo, "recommend", "--user", str(user), "-n", "10",
                              "--json").stdout)
    got = out["recommendations"]
    # The command answers as the stage did: same movies, same order, same scores.
    assert [r["movieId"] for r in got] == expected["movieId"].tolist()
    assert [r["score"] for r in got] == pytest.approx(expected["score"].tolist(), abs=1e-4)
    assert all(0.5 <= r["predicted_rating"] <= 5.0 for r in got)
    assert all(r["title"] for r in got) and out["fallback"] is None

    text = movierec(repo, "recommend", "--user", str(user), "-n", "3").stdout.splitlines()
    assert text[0] == f"top 3 for user {user} (predicted rating, 0.5-5 stars)"
    assert text[1].split() == ["rank", "predicted", "title", "genres"]
    assert len(text) == 5 and text[2].split()[0] == "1"

    users = pd.read_parquet(repo / "data/prepared/users.parquet")["userId"]
    unknown = movierec(repo, "recommend", "--user", "999999", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        f"error: unknown user 999999 (the train split knows {len(users):,} users, ids "
        f"{users.min()} to {users.max()})")
    fallback = json.loads(movierec(repo, "recommend", "--user", "999999", "--fallback",
                                   "popular", "--json").stdout)
    assert fallback["fallback"] == "popular" and len(fallback["recommendations"]) == 10
    counts = [r["train_ratings"] for r in fallback["recommendations"]]
    assert counts == sorted(counts, reverse=True)

    movie = int(top["movieId"].iloc[0])
    similar = json.loads(movierec(repo, "similar", "--movie", str(movie), "-n", "5",
                                  "--json").stdout)["similar"]
    assert len(similar) == 5 and movie not in [s["movieId"] for s in similar]
    sims = [s["similarity"] for s in similar]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    bad = movierec(repo, "similar", "--movie", "-3", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: unknown movie -3 (")


def test_exp_run_and_the_diff_commands(repo):
    # A train key reruns train and what depends on it; the data stages come from the cache.
    out = dvc(repo, "exp", "run", "-S", "train.epochs=2")
    for stage in ("train", "recommend", "evaluate"):
        assert f"Running stage '{stage}'" in out, out
    for stage in ("download", "ingest", "preprocess"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out

    params_diff = dvc(repo, "params", "diff")
    assert "train.epochs" in params_diff
    assert params_diff.split("train.epochs")[1].split()[:2] == ["1", "2"]

    metrics = json.loads(dvc(repo, "metrics", "diff", "--all", "--json"))
    test_diff = metrics["metrics/test.json"]
    assert set(test_diff) >= {"mse", "rmse", "mae", "ranking.model.ndcg",
                              "ranking.popularity.precision", "ranking.biases.map",
                              "ranking.ease.ndcg", "ranking.ease_fit.lambda"}
    assert test_diff["mse"]["old"] != test_diff["mse"]["new"]
    assert "metrics/test.json" in dvc(repo, "metrics", "show")
    # DVCLive's latest-epoch figures sit beside the stage's own metrics.
    assert metrics["dvclive/metrics.json"]["step"] == {"old": 1, "new": 2, "diff": 1}

    shown = json.loads(dvc(repo, "plots", "show", "--json"))["data"]
    assert {"loss", "curves", "ranking", "per_star"} <= set(shown)
    assert {"plots/loss.png", "plots/mse.png", "plots/predicted_by_star.png"} <= set(shown)
    html = dvc(repo, "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert "window.vegaEmbed" in page and "cdn.jsdelivr" not in page, html  # offline page
    for label in ('"epoch"', "MSE (stars squared) or NDCG@k", "true rating (stars)"):
        assert label in page  # labelled axes
    # Across revisions: the committed run's bars beside the experiment's.
    diff = json.loads(dvc(repo, "plots", "diff", "HEAD", "--json"))
    assert not diff.get("errors"), diff["errors"]
    bars = diff["data"]["ranking"][0]["content"]["data"]["values"]
    assert {b["rev"] for b in bars if b["bar"] == "NDCG@10 ease"} == {"HEAD", "workspace"}

    table = dvc(repo, "exp", "show", "--csv")
    assert "train.epochs" in table


def test_own_ratings_file_is_tracked(repo):
    # A user's ratings.csv (here: the twin's own ratings, written out as GroupLens CSV).
    import pandas as pd

    ratings = pd.read_parquet(repo / "data/raw/ratings.parquet")
    own = repo / "data/external/ratings.csv"
    ratings.head(5_000).to_csv(own, index=False)
    # As far as the split: what follows is the same for every source of ratings.
    out = dvc(repo, "exp", "run", "-S", "data.dataset=file",
              "-S", "data.path=data/external/ratings.csv", "preprocess")
    assert "Running stage 'ingest'" in out
    assert "ingest: file: 5,000 ratings" in out
    assert len(pd.read_parquet(repo / "data/prepared/test.parquet")) == 1_000

    # Editing the file makes the pipeline stale from ingest on.
    with own.open("a") as fh:
        fh.write("999999,1,4.0,1112486027\n")
    status = dvc(repo, "status")
    assert "ingest" in status and "data/external/ratings.csv" in status


def test_movielens_release_from_a_local_server(repo, tmp_path):
    # ML-100K's layout (u.data, latin-1 u.item), served from 127.0.0.1 with its checksums
    # overridden for the fixture; switching datasets back and forth downloads it once.
    import pandas as pd
    from support.movielens_fixtures import (
        FixtureServer,
        fixture_tables,
        release_zip,
        write_overrides,
    )

    from movierec.core.releases import OVERRIDE_ENV

    ratings, movies = fixture_tables(whole_stars=True)
    with FixtureServer() as server:
        entry = server.serve_release("ml-100k", release_zip("ml-100k", ratings, movies), ratings)
        overrides = write_overrides(tmp_path / "releases.json", {"ml-100k": entry})
        env = {OVERRIDE_ENV: str(overrides)}
        # As far as the split: what follows is the same for every source of ratings.
        out = dvc(repo, "exp", "run", "-S", "data.dataset=ml-100k", "preprocess", env=env)
        assert "Running stage 'download'" in out
        assert f"ml-100k: {len(ratings)} ratings and 6 users, as published by GroupLens" in out
        assert len(pd.read_parquet(repo / "data/prepared/test.parquet")) == round(
            0.2 * len(ratings))
        assert server.routes["/ml-100k.zip"].requests == 1

        # Back and forth again, as far as the stage that fetches: only `download` could ask
        # the server.
        dvc(repo, "exp", "run", "-S", "data.dataset=synthetic", "download", env=env)
        again = dvc(repo, "exp", "run", "-S", "data.dataset=ml-100k", "download", env=env)
        assert "Running stage 'download'" not in again, again
        assert server.routes["/ml-100k.zip"].requests == 1  # restored from DVC's cache


# bce and bpr share every stage but train's loop with softmax (tests/train covers each).
@pytest.mark.parametrize("objective", ["softmax"])
def test_ranking_objective_through_the_pipeline(repo, objective):
    import pandas as pd

    # The ranking configuration's narrow side branch: softmax scores every pool pair through it.
    out = dvc(repo, "exp", "run", "-S", "data.dataset=synthetic", "-S",
              f"train.objective={objective}", "-S", "train.epochs=2", "-S",
              "train.val_fraction=0.1", "-S", "train.hidden_units=16")
    assert f"train: {objective} objective, 2 epochs x " in out
    train_json = json.loads((repo / "metrics/train.json").read_text())
    assert train_json["objective"] == objective and "train_mse" not in train_json
    assert "negatives" not in train_json  # the pools are drawn in the step, not redrawn
    assert "val_ndcg@10" in train_json
    from movierec.train.live import read_history

    history = read_history(repo / "dvclive")
    assert sorted(history.columns) == ["epoch", "test_loss", "test_ndcg", "train_loss",
                                       "val_loss", "val_ndcg"]
    assert history["epoch"].tolist() == [1, 2]
    report = json.loads((repo / "metrics/test.json").read_text())
    assert report["rating_metrics"].startswith(f"none: trained with train.objective={objective}")
    assert "mse" not in report and report["objective"] == objective
    assert {"model", "popularity", "biases", "ease"} <= set(report["ranking"])
    per_star = pd.read_csv(repo / "plots/per_star.csv")
    assert list(per_star.columns) == ["rating", "count", "mean_prediction"]

    top = pd.read_parquet(repo / "data/recommendations/top_n.parquet")
    user = int(top["userId"].iloc[0])
    got = json.loads(movierec(repo, "recommend", "--user", str(user), "-n", "5",
                              "--json").stdout)["recommendations"]
    assert [r["movieId"] for r in got] == top[top["userId"] == user]["movieId"].tolist()[:5]
    assert all("predicted_rating" not in r for r in got)  # a score, not stars
    assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
    text = movierec(repo, "recommend", "--user", str(user), "-n", "2").stdout.splitlines()
    assert text[0].startswith(f"top 2 for user {user} (ranking score of a model trained "
                              f"with the {objective} objective")
