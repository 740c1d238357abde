"""The train stage's portable folder answers for MovieLens ids with Keras and NumPy alone, as the
pipeline's own model and recommend stage do."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from support.pipeline import artifacts_get, run

pytestmark = pytest.mark.e2e

NAME = "portable-recommender"

# Run in the exported folder by a Python that cannot import this project: keras' safe-mode
# loader would need it for any layer of ours, and the companion must not import it either.
ASK = """
import json, sys
sys.modules["movierec"] = None  # any `import movierec` now fails
sys.path.insert(0, ".")  # -I leaves the folder off the path; the companion is here
import numpy as np
from topn import Portable
users, movies = json.loads(sys.argv[1]), json.loads(sys.argv[2])
p = Portable(".")
scores = p.model.predict({"userId": np.array(users), "movieId": np.array(movies)}, verbose=0)
print(json.dumps({"scores": scores[:, 0].tolist(),
                  "top": {str(u): p.top_n(u, 10) for u in sorted(set(users))}}))
"""


def test_fetched_portable_folder_answers_like_the_pipeline_without_the_project(
        trained_project, tmp_path):
    from movierec.nets.keras_model import load_model, predict

    # Published as a user of the registry would, and fetched by name into a folder outside it.
    root = trained_project.copy(tmp_path / "project")
    run(root, "git", "tag", "-a", f"{NAME}@v1.0.0", "-m", f"{NAME} v1.0.0")
    got = artifacts_get(tmp_path, root, NAME, "-o", "portable")
    assert got.returncode == 0, got.stderr
    folder = tmp_path / "portable"
    assert sorted(p.name for p in folder.iterdir()) == ["model.keras", "seen.npz", "topn.py"]
    train = pd.read_parquet(root / "data/prepared/train.parquet")
    users = pd.read_parquet(root / "data/prepared/users.parquet")["userId"].to_numpy()
    movies = pd.read_parquet(root / "data/prepared/movies.parquet")["movieId"].to_numpy()
    sample = train.sample(200, random_state=0)
    done = subprocess.run(
        [sys.executable, "-I", "-c", ASK,
         json.dumps(users[sample["user_idx"]].tolist()),
         json.dumps(movies[sample["movie_idx"]].tolist())],
        cwd=folder, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])

    # The same scores as the project's model on the same pairs (row positions there).
    expected = predict(load_model(root / "models/model.keras"), sample)
    np.testing.assert_allclose(answer["scores"], expected, rtol=1e-5, atol=1e-5)
    # The same top 10 as the recommend stage (which scores exactly by default).
    top = pd.read_parquet(root / "data/recommendations/top_n.parquet")
    for user, pairs in answer["top"].items():
        stage = top[top["userId"] == int(user)].sort_values("rank")
        assert [m for m, _ in pairs] == stage["movieId"].tolist(), user
        np.testing.assert_allclose([s for _, s in pairs], stage["score"], rtol=1e-4, atol=1e-4)
