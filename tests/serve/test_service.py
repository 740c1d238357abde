"""`python -m movierec serve` on 127.0.0.1, against a copy of the session's trained project: the
same lists as the recommend stage and command, one-line errors, and a model swapped after
`dvc repro` without a failed request, or kept when the new one does not load."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from support.pipeline import dvc
from support.service import Server, free_port, get, wait_for

from movierec.core.paths import pipeline_paths
from movierec.serve.query import Recommender

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(trained_project, tmp_path):
    repo = trained_project.copy(tmp_path / "project")
    server = Server(repo, tmp_path / "serve.log")
    yield repo, server
    server.stop()


def _lock_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


def test_answers_as_the_stage_refuses_bad_input_and_swaps_models(served):
    repo, server = served
    base = server.base
    status, health = get(base, "/health")
    assert status == 200 and health["model_md5"] == _lock_md5(repo, "train", "models/model.keras")
    assert health["data"]["data.dataset"] == "synthetic" and health["loaded_at"]

    # The recommend stage's lists, and longer ones scored as the recommend command scores.
    top = pd.read_parquet(repo / "data/recommendations/top_n.parquet")
    rec = Recommender.load(pipeline_paths(repo))
    users = top["userId"].drop_duplicates().sample(15, random_state=0).tolist()
    for user in users:
        status, body = get(base, f"/users/{user}/recommendations?n=10")
        assert status == 200 and body["source"] == "recommend stage"
        stage = top[top["userId"] == user].sort_values("rank")
        got = body["recommendations"]
        assert [r["movieId"] for r in got] == stage["movieId"].tolist()
        np.testing.assert_allclose([r["score"] for r in got], stage["score"], atol=1e-4)
        assert all(r["title"] and 0.5 <= r["predicted_rating"] <= 5 for r in got)
        status, longer = get(base, f"/users/{user}/recommendations?n=25")
        assert status == 200 and longer["source"] == "scored on request"
        assert [r["movieId"] for r in longer["recommendations"]] == \
            [i.movie_id for i in rec.recommend(user, 25)]

    # History: the user's train ratings, newest first, or highest first.
    train = pd.read_parquet(repo / "data/prepared/train.parquet")
    user_ids = pd.read_parquet(repo / "data/prepared/users.parquet")["userId"].to_numpy()
    user = users[0]
    rated = train[user_ids[train["user_idx"]] == user]
    status, history = get(base, f"/users/{user}/history?n=10000")
    assert status == 200 and history["total"] == len(rated) == len(history["ratings"])
    times = [r["rated_at"] for r in history["ratings"]]
    assert times == sorted(times, reverse=True)
    status, best = get(base, f"/users/{user}/history?n=5&sort=rating")
    assert [r["rating"] for r in best["ratings"]] == sorted(rated["rating"], reverse=True)[:5]

    movie = int(top["movieId"].iloc[0])
    status, similar = get(base, f"/movies/{movie}/similar?n=5")
    assert status == 200
    assert [r["movieId"] for r in similar["similar"]] == \
        [i.movie_id for i in rec.similar(movie, 5)]
    word = similar["movie"]["title"].split()[0]
    status, found = get(base, f"/movies?search={word.lower()}")
    assert status == 200 and movie in [m["movieId"] for m in found["movies"]]

    # One-line JSON errors: unknown ids 404, bad queries 422; nothing reads a path.
    for path, code, says in [
        ("/users/999999/recommendations", 404, "unknown user 999999 (the train split knows"),
        ("/movies/999999/similar", 404, "unknown movie 999999"),
        ("/users/1/recommendations?n=0", 422, "n: received '0'"),
        ("/users/1/recommendations?n=100000", 422, "n: received '100000'"),
        ("/users/abc/recommendations", 422, "user_id: received 'abc'"),
        ("/users/1/history?sort=oldest", 422, "sort: received 'oldest'"),
        ("/movies?search=", 422, "search: received ''"),
        ("/users/..%2F..%2Fdvc.lock/history", 404, "no such address: /users/../../dvc.lock"),
        ("/static/../dvc.lock", 404, "no such address"),
    ]:
        status, body = get(base, path)
        assert status == code and list(body) == ["error"], (path, body)
        assert says in body["error"] and "\n" not in body["error"], (path, body)
    assert server.proc.poll() is None

    # A new model: requests keep being answered while the service loads and swaps it.
    failures, answered, stop = [], [0], threading.Event()

    def hammer():
        while not stop.is_set():
            status, body = get(base, f"/users/{users[1]}/recommendations?n=10")
            answered[0] += 1
            if status != 200 or len(body["recommendations"]) != 10:
                failures.append((status, body))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["train"]["seed"] += 1
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dvc(repo, "repro", "recommend")
        new = _lock_md5(repo, "train", "models/model.keras")
        assert new != health["model_md5"]
        wait_for(lambda: get(base, "/health")[1]["model_md5"] == new, 60,
                 f"the swap; log:\n{server.text()}")
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures and answered[0] > 0, failures[:3]
    assert "swapped model" in server.text()
    new_top = pd.read_parquet(repo / "data/recommendations/top_n.parquet")
    status, body = get(base, f"/users/{users[1]}/recommendations?n=10")
    assert [r["movieId"] for r in body["recommendations"]] == \
        new_top[new_top["userId"] == users[1]].sort_values("rank")["movieId"].tolist()

    # A model that cannot load: the old one keeps serving, and the log says why.
    (repo / "models/model.keras").write_bytes(b"not a model")
    lock = (repo / "dvc.lock").read_text().replace(new, "0" * 32)
    (repo / "dvc.lock").write_text(lock)
    wait_for(lambda: "failed to load" in server.text(), 30, "the failed load's log line")
    assert "still serving model " + new[:8] in server.text()
    assert get(base, "/health")[1]["model_md5"] == new
    assert get(base, f"/users/{users[1]}/recommendations?n=10")[0] == 200
    assert server.proc.poll() is None


def test_binds_the_loopback_address_by_default():
    from movierec.__main__ import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_a_project_without_outputs_is_a_one_line_error(tmp_path):
    (tmp_path / "dvc.yaml").write_text((Path(__file__).parents[2] / "dvc.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "movierec", "serve", "--root", str(tmp_path),
                           "--port", str(free_port())], capture_output=True, text=True,
                          timeout=60, env={**os.environ}, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "not found" in \
        done.stderr, done.stderr
