"""Sharing the pipeline's artifacts through a DVC remote, and running experiments from DVC's queue
while `dvc exp show` follows their live metrics.

Each test works in its own copy of the session's trained project (a temporary git repository on
a tiny synthetic twin, after one `dvc repro`).
"""

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.pipeline import (
    dvc,
    env_for,
    kill_leftovers,
    processes_in,
    run,
    wait_until_gone,
)

pytestmark = pytest.mark.e2e

STAGES = ("download", "ingest", "preprocess", "train", "recommend", "evaluate")
QUEUE_TIMEOUT_S = 480  # both queued experiments together, including the workers' start
# The queued grid trains the session project's 20,000 ratings (16,000 to train on) at batch 16
# and one SGD step per call into TensorFlow: an epoch is slow enough that `dvc exp show`, polled
# between epochs, sees several of them go by. Speed knobs only (steps_per_execution), and a
# batch small enough to be slow yet stable at the default learning rate (batch 8 diverges).
EPOCHS = 4
SLOW = ("train.batch_size=16", "train.steps_per_execution=1")
LIVE = "dvclive/metrics.json"
POLL_S = 0.5  # between looks at the temporary copies' files


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_push_then_pull_into_a_clone_reruns_nothing(trained_project, tmp_path):
    a = trained_project.copy(tmp_path / "a")  # after `dvc repro`, committed
    remote = tmp_path / "remote"
    dvc(a, "remote", "add", "-d", "shared", str(remote))
    pushed = dvc(a, "push")
    assert "pushed" in pushed and any(remote.rglob("*")), pushed
    run(a, "git", "add", "-A")
    run(a, "git", "commit", "-q", "-m", "run, pushed to the shared remote")

    b = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(a), str(b))
    # Each clone has its own cache: nothing in the committed config points B at A's.
    assert "cache" not in (b / ".dvc/config").read_text()
    assert not (b / ".dvc/cache").exists()
    assert not (b / "models/model.keras").exists()
    pulled = dvc(b, "pull")
    assert "fetched" in pulled and "models/model.keras" in pulled, pulled
    assert (b / ".dvc/cache").is_dir()

    again = dvc(b, "repro")
    assert "Running stage" not in again, again
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again
    assert "Data and pipelines are up to date." in again
    assert "up to date" in dvc(b, "status")
    for name in ("models/model.keras", "data/prepared/train.parquet",
                 "data/recommendations/top_n.parquet", "metrics/test.json"):
        assert md5(b / name) == md5(a / name), name


@pytest.fixture
def queue_repo(trained_project, tmp_path):
    repo = trained_project.copy(tmp_path / "project")
    yield repo
    # Whatever the outcome: no worker, exec-run or stage outlives the test. Only processes whose
    # working directory is inside this test's copy are touched.
    kill_leftovers(repo)


def _queue_status(repo: Path) -> dict[str, str]:
    """``dvc queue status`` as {experiment name: Queued | Running | Success | Failed}."""
    rows = dvc(repo, "queue", "status").splitlines()
    assert rows[0].split() == ["Task", "Name", "Created", "Status"], rows
    table = rows[1:rows.index("")] if "" in rows else rows[1:]
    return {row.split()[1]: row.split()[-1] for row in table}


def _exp_show(repo: Path) -> list[dict] | None:
    """`dvc exp show --json`, or None when a call fails (reported, not fatal, mid-run)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                          env=env_for(repo), capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        print(f"dvc exp show failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout)


def _live_step(shown: list[dict], name: str) -> tuple[str | None, int | None]:
    """(executor state, DVCLive step) of experiment ``name`` in `dvc exp show --json`'s output.
    State: running, success, failed or queued (None: not listed). No step while
    dvclive/metrics.json is missing (DVC removes a stage's outputs before running it; the first
    epoch writes it) or caught mid-rewrite (DVCLive rewrites it in place, so a read can find it
    empty): exp show then gives the file an error instead of data."""
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if exp.get("name") != name:
                continue
            state = (exp.get("executor") or {}).get("state")
            rev = exp["revs"][0]
            live = ((rev.get("data") or {}).get("metrics") or {}).get(LIVE) or {}
            return state, (live.get("data") or {}).get("step")
    return None, None


def _live_files(repo: Path) -> list[int]:
    """The epochs that the queued experiments' DVCLive files (in DVC's temporary copies)
    report now; a file caught mid-rewrite is skipped."""
    steps = []
    for path in (repo / ".dvc/tmp/exps").glob(f"*/{LIVE}"):
        try:
            steps.append(int(json.loads(path.read_text())["step"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return steps


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the workers through /proc")
def test_queued_grid_runs_in_workers_and_exp_show_follows_them(queue_repo):
    repo = queue_repo
    # The queue's workers are `dvc exp queue-worker` processes that `dvc queue start` spawns
    # (as `dvc`, looked up on PATH) with its own environment; each experiment then runs its
    # stages in a temporary copy of the repository, .dvc/tmp/exps/tmp*, where the stage commands
    # find `python` on PATH too. So the workers use this interpreter because dvc() puts its
    # folder first on PATH, as `make` and `source .venv/bin/activate` do. The package comes
    # from PYTHONPATH, this checkout's src/, not the temporary copy's, which is exactly what
    # `make install` (pip install -e .) gives a user; both are identical here because nothing
    # changes after queueing.
    # Up to the train stage: what the queue adds (workers, temporary copies, live metrics) is
    # all there; the whole chain through an experiment is test_pipeline_e2e's.
    queued = dvc(repo, "exp", "run", "--queue", "-S", "train.latent_dim=4,8",
                 "-S", f"train.epochs={EPOCHS}", *(arg for key in SLOW for arg in ("-S", key)),
                 "train")
    names = re.findall(r"Queued experiment '([^']+)' for future execution", queued)
    assert len(names) == 2, queued
    assert _queue_status(repo) == dict.fromkeys(names, "Queued")

    start = time.monotonic()
    # Not through a pipe: the process that spawns each worker keeps the caller's stdout and
    # stderr open until its worker quits, so reading them to the end (capture_output) would
    # wait for the whole queue. A file is what a terminal gives: the command returns at once.
    log = repo.parent / "queue-start.log"
    with log.open("w") as fh:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=repo,
                       env=env_for(repo), stdout=fh, stderr=subprocess.STDOUT, timeout=60,
                       check=True)
    assert "Started '2' new experiments task queue workers" in log.read_text()
    assert time.monotonic() - start < 30
    # `dvc exp show` asked while the workers train: each call starts DVC (seconds of CPU), so
    # it is asked only when a worker's DVCLive file shows an epoch before the last, until it
    # has reported one; the workers leave once the queue is empty.
    seen: dict[str, list[tuple[float, str | None, int | None]]] = {n: [] for n in names}
    mid_run = False
    while processes_in(repo) and time.monotonic() - start < QUEUE_TIMEOUT_S:
        if not mid_run and any(1 <= step < EPOCHS for step in _live_files(repo)):
            shown = _exp_show(repo)
            for name in names:
                state, step = _live_step(shown, name) if shown is not None else (None, None)
                seen[name].append((round(time.monotonic() - start, 1), state, step))
                mid_run |= state == "running" and step is not None and 1 <= step < EPOCHS
        time.sleep(POLL_S)
    elapsed = time.monotonic() - start
    status = _queue_status(repo)
    logs = {name: dvc(repo, "queue", "logs", name) for name in names}
    timeline = "\n".join(f"{name} {t:6.1f} s  {state}  step {step}"
                         for name in names for t, state, step in seen[name])
    print(f"two queued experiments with -j 2: {elapsed:.0f} s\n{timeline}")  # pytest -s
    assert status == dict.fromkeys(names, "Success"), (
        f"after {elapsed:.0f} s: {status}\n{timeline}\n" +
        "\n".join(f"--- {n}\n{log}" for n, log in logs.items()))
    for log in logs.values():
        # Both start from the committed run: what does not depend on latent_dim is restored.
        assert "Running stage 'train'" in log, log
        assert "Running stage 'recommend'" not in log, log
        for stage in ("download", "ingest", "preprocess"):
            assert f"Stage '{stage}' didn't change, skipping" in log, log
        for epoch in range(1, EPOCHS + 1):
            assert f"epoch {epoch}/{EPOCHS}: " in log
    # Live metrics: an experiment seen while it trains, at an epoch before the last
    # (dvclive/metrics.json is rewritten after every epoch), and no step ever going backwards.
    running = {n: [step for _, state, step in seen[n] if state == "running" and step is not None]
               for n in names}
    assert any(1 <= step < EPOCHS for steps in running.values() for step in steps), timeline
    assert all(steps == sorted(steps) for steps in running.values()), timeline
    # The runs happened in temporary copies: the workspace keeps the committed run.
    assert run(repo, "git", "status", "--porcelain") == ""
    assert "up to date" in dvc(repo, "status")

    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    baseline = next(rev for rev in shown if rev["name"] == "main")
    found = {}
    for exp in baseline["experiments"]:
        rev = exp["revs"][0]
        data = rev["data"]
        latent_dim = data["params"]["params.yaml"]["data"]["train"]["latent_dim"]
        trained = data["metrics"]["metrics/train.json"]["data"]
        found[rev["name"]] = (latent_dim, trained["train_mse"], trained["n_weights"])
    assert set(found) == set(names)
    assert sorted(dim for dim, _, _ in found.values()) == [4, 8]
    assert all(0 < mse < 5 for _, mse, _ in found.values())
    weights = {dim: n for dim, _, n in found.values()}
    assert weights[8] > weights[4]  # each experiment's own network
    assert len({mse for _, mse, _ in found.values()}) == 2  # two different models
    assert all(_live_step(shown, name) == ("success", EPOCHS) for name in names)

    # The workers leave once the queue is empty; `dvc queue stop` makes sure of it.
    dvc(repo, "queue", "stop")
    assert not wait_until_gone(repo, 60), "queue workers still running after dvc queue stop"
    assert "Worker status: 0 active, 0 idle" in dvc(repo, "queue", "status")
