"""Shared fixtures: small synthetic twins, and one trained copy of the project, built once per
test session (across pytest-xdist's workers too) and copied by the tests that run DVC in it."""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

# Every process a test starts inherits these: DVC sends no usage analytics, and neither DVC nor
# DVCLive talks to DVC Studio, even on a machine whose DVC config holds a Studio token.
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["DVC_STUDIO_OFFLINE"] = "1"

from filelock import FileLock
from support.pipeline import copy_project, dvc, make_project, run

from movierec.data import synthetic

# The longest modules, longest first. pytest-xdist (--dist loadscope) hands out whole modules
# in collection order, each to the next worker with at most two tests left to run, so the suite
# ends soonest when these start first, the longest first, and the many short modules fill in
# around them; a long module handed out last runs on alone while the other workers idle.
LONGEST_FIRST = ("pipeline/test_pipeline_e2e.py", "train/test_multi_worker_stage.py",
                 "benchmarks/test_bench.py", "train/test_resume.py", "pipeline/test_tuned.py",
                 "pipeline/test_dvc_sharing.py", "core/test_stages.py",
                 "train/test_multi_worker_loop.py", "train/test_mirrored.py",
                 "pipeline/test_artifacts.py", "serve/test_service.py",
                 "train/test_ranking_training.py", "train/test_objectives.py",
                 "pipeline/test_portable_artifact.py")


def pytest_collection_modifyitems(items):
    # An end-to-end run is slow by nature: `make test-fast` leaves it out with the rest.
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
    modules_with_slow = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        where = item.path.relative_to(Path(__file__).parent).as_posix()
        if where in LONGEST_FIRST:
            return LONGEST_FIRST.index(where)
        return len(LONGEST_FIRST) + (item.path not in modules_with_slow)

    items.sort(key=rank)  # stable: a module's tests keep their order, and stay together


@pytest.fixture(scope="session")
def twin_200k() -> synthetic.Twin:
    return synthetic.generate(200_000, seed=7)


@pytest.fixture(scope="session")
def twin_30k() -> synthetic.Twin:
    return synthetic.generate(30_000, seed=3)


@dataclass(frozen=True)
class TrainedProject:
    """The project on a 20,000-rating twin (one epoch) after a first ``dvc repro``, committed.

    ``repro_log`` is what that ``dvc repro`` printed. Tests never change ``path``: they copy it.
    """

    path: Path
    repro_log: str

    def copy(self, dst: Path) -> Path:
        return copy_project(self.path, dst)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, worker_id) -> TrainedProject:
    # One build for the whole session: pytest-xdist's workers share the parent of their
    # temporary folders, and the first to take the lock builds the project for all of them.
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    repo, log = shared / "trained-project", shared / "trained-project.json"
    with FileLock(str(shared / "trained-project.lock")):
        if not log.is_file():
            shutil.rmtree(repo, ignore_errors=True)  # a build that failed half-way
            make_project(repo)
            out = dvc(repo, "repro")
            run(repo, "git", "add", "-A")
            run(repo, "git", "commit", "-q", "-m", "baseline run")
            log.write_text(json.dumps({"repro_log": out}))
    return TrainedProject(repo, json.loads(log.read_text())["repro_log"])
