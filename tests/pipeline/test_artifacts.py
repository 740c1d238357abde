"""The trained model as a registered DVC artifact: `dvc artifacts get` and `dvc ls`.

A copy of the session's trained project (a tiny twin, one epoch) and a second model of another
seed are each committed and published with an annotated Git tag; a consumer folder
outside the repository then fetches the versions by name, as a user of the model would.
"""

import json
from pathlib import Path

import pytest
import yaml
from support.pipeline import ROOT, artifacts_get, dvc, make_project, run

pytestmark = pytest.mark.e2e

NAME = "residual-recommender"
MODEL = "models/model.keras"
N_RATINGS = 5_000  # the lightweight-tag test never runs a stage: any size does


def tag(repo: Path, version: str) -> bytes:
    # Annotated (-a): DVC's tag lookup (GTO's) skips lightweight tags.
    run(repo, "git", "tag", "-a", f"{NAME}@{version}", "-m", f"{NAME} {version}")
    return (repo / MODEL).read_bytes()


def train_and_tag(repo: Path, version: str) -> bytes:
    dvc(repo, "repro", "train")  # the train stage, on the committed data stages' outputs
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", f"model {version}")
    return tag(repo, version)


@pytest.fixture(scope="module")
def registry(trained_project, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The repository with two published versions, and each version's model file: the
    session's trained project, then a model of another seed."""
    repo = trained_project.copy(tmp_path_factory.mktemp("registry") / "project")
    models = {"v1.0.0": tag(repo, "v1.0.0")}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["seed"] += 1  # another initialisation: a different model file
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    models["v1.1.0"] = train_and_tag(repo, "v1.1.0")
    assert models["v1.0.0"] != models["v1.1.0"]
    return repo, models


def test_the_artifact_is_the_train_stage_output():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    artifact = spec["artifacts"][NAME]
    # Spelled out in dvc.yaml rather than ${paths.model}: the two must not drift apart.
    assert artifact["path"] == spec["vars"][0]["paths"]["model"] == MODEL
    assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]


def test_get_without_rev_fetches_the_greatest_version(registry, tmp_path):
    repo, models = registry
    done = artifacts_get(tmp_path, repo, NAME, "-o", "model.keras")
    assert done.returncode == 0, done.stderr
    assert "Downloaded 1 file(s) to 'model.keras'" in done.stdout
    fetched = tmp_path / "model.keras"
    assert fetched.read_bytes() == models["v1.1.0"] == (repo / MODEL).read_bytes()

    from movierec.nets.keras_model import load_net

    model, spec = load_net(fetched)  # the project's loader: Keras' safe mode, no custom objects
    assert spec.objective == "rating"
    assert [i.name for i in model.inputs] == ["user", "movie"]


def test_rev_fetches_an_older_version_from_the_cache(registry, tmp_path):
    repo, models = registry
    done = artifacts_get(tmp_path, repo, NAME, "--rev", "v1.0.0", "-o", "v1.keras")
    assert done.returncode == 0, done.stderr
    # The workspace holds v1.1.0's model: v1.0.0's bytes can only come from the repository's
    # cache, found through the tagged commit's dvc.lock. No remote, no push.
    assert (tmp_path / "v1.keras").read_bytes() == models["v1.0.0"]
    url = artifacts_get(tmp_path, repo, NAME, "--rev", "v1.0.0", "--show-url")
    assert url.returncode == 0, url.stderr
    assert Path(url.stdout.strip()).is_relative_to(repo / ".dvc/cache"), url.stdout


@pytest.mark.parametrize("args", [
    ["no-such-model"],  # a name dvc.yaml does not register
    [NAME, "--rev", "1.0.0"],  # the version is the tag's part after '@', 'v' included
    [NAME, "--rev", "main"],  # not a Git revision: only a published version
])
def test_what_is_not_published_fails(registry, tmp_path, args):
    repo, _ = registry
    done = artifacts_get(tmp_path, repo, *args, "-o", "model.keras")
    assert done.returncode != 0
    assert "Unable to find artifact" in done.stderr, done.stderr
    assert not (tmp_path / "model.keras").exists()


def test_a_lightweight_tag_publishes_nothing(tmp_path):
    # No run needed: the tag lookup comes before any data is read.
    repo = make_project(tmp_path / "project", N_RATINGS, epochs=1)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    run(repo, "git", "tag", f"{NAME}@v1.0.0")
    done = artifacts_get(consumer, repo, NAME)
    assert done.returncode != 0 and "Unable to find artifact" in done.stderr, done.stderr
    run(repo, "git", "tag", "-f", "-a", f"{NAME}@v1.0.0", "-m", "annotated")
    done = artifacts_get(consumer, repo, NAME)
    # Now the version is found; this commit has no dvc.lock, hence no model to fetch.
    assert done.returncode != 0 and "Unable to find artifact" not in done.stderr, done.stderr
    assert "No storage files available: 'models/model.keras'" in done.stderr, done.stderr


def test_dvc_ls_lists_the_model(registry, tmp_path):
    repo, models = registry
    listed = dvc(tmp_path, "ls", str(repo), "models")
    assert "model.keras" in listed.split()
    entries = {e["path"]: e for e in json.loads(dvc(tmp_path, "ls", "--json", str(repo),
                                                     "models"))}
    assert entries["model.keras"]["isout"]  # a DVC output, not a file in Git
    assert entries["model.keras"]["size"] == len(models["v1.1.0"])
