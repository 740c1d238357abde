"""The train stage as the chief of a cluster with a `python -m movierec worker` on 127.0.0.1:
the same model as on one device, a missing, a killed and a misconfigured worker.

Every task is a fresh Python (a cluster can only be set up before TensorFlow starts), bounded
in time. Nothing leaves 127.0.0.1.
"""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.cluster import errors, free_ports, tf_config
from support.pipeline import dvc, env_for, make_project, run

pytestmark = pytest.mark.e2e

# The model and metrics appear only when the stage succeeds; the DVCLive folder grows an
# epoch at a time (a log of the completed epochs, like the checkpoint).
OUTPUTS = ("models/model.keras", "metrics/train.json", "models/portable")
LIVE = "dvclive"


def _train_args() -> list[str]:
    return ["stages/train.py", "--train", "data/prepared/train.parquet",
            "--test", "data/prepared/test.parquet",
            "--user-index", "data/prepared/users.parquet",
            "--movie-index", "data/prepared/movies.parquet", "--model", OUTPUTS[0],
            "--portable", OUTPUTS[2],
            "--live", LIVE, "--metrics", OUTPUTS[1],
            "--checkpoint-dir", "models/checkpoints"]


def _set_train(folder: Path, **values) -> None:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with a small twin prepared (dvc repro preprocess)."""
    repo = make_project(tmp_path_factory.mktemp("cluster"), 20_000, epochs=2)
    dvc(repo, "repro", "preprocess")
    return repo


def _worker_copy(project: Path, name: str) -> Path:
    """The worker's own folder (another machine's checkout, same params and data)."""
    folder = project.parent / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(project, folder, ignore=shutil.ignore_patterns(".git", ".dvc", "models",
                                                                   "plots", "metrics"))
    return folder


def _start(folder: Path, args: list[str], config: str, log: Path) -> subprocess.Popen:
    env = {**env_for(folder), "TF_CONFIG": config}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, *args], cwd=folder, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def _launch(project: Path, worker_dir: Path, tmp_path: Path,
            name: str = "") -> tuple[subprocess.Popen, subprocess.Popen]:
    """A worker (in its own folder) and the chief stage, on two free loopback ports; their
    output goes to chief{name}.log and worker{name}.log."""
    ports = free_ports(2)
    worker = _start(worker_dir, ["-m", "movierec", "worker"], tf_config(ports, 1),
                    tmp_path / f"worker{name}.log")
    chief = _start(project, _train_args(), tf_config(ports, 0), tmp_path / f"chief{name}.log")
    return chief, worker


def _finish(chief: subprocess.Popen, worker: subprocess.Popen, tmp_path: Path,
            name: str = "") -> tuple[str, str]:
    """Waits for both to succeed (bounded); returns the chief's and the worker's logs."""
    logs = [tmp_path / f"{who}{name}.log" for who in ("chief", "worker")]
    try:
        assert chief.wait(timeout=240) == 0, logs[0].read_text()[-3000:]
        assert worker.wait(timeout=60) == 0, logs[1].read_text()[-3000:]
    finally:
        for p in (chief, worker):
            p.kill()
    return logs[0].read_text(), logs[1].read_text()


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _clear_outputs(folder: Path) -> None:
    for name in (*OUTPUTS, LIVE, "models/checkpoints"):
        shutil.rmtree(folder / name, ignore_errors=True) if (folder / name).is_dir() else \
            (folder / name).unlink(missing_ok=True)


# The objectives' own code paths under an all-reduce are the mirrored test's; here, the cluster
# around the stage, for the rating objective and a ranking one with its validation part.
@pytest.mark.parametrize("objective", ["rating", "softmax"])
def test_chief_stage_and_worker_on_loopback_match_one_device(project, tmp_path, objective):
    import keras

    # Ranking with a validation part: every task scores it and stops at the same epoch.
    # softmax scores every (user, pool movie) pair through the side branch: the ranking
    # configuration's narrow one keeps the three runs short.
    ranking = ({"val_fraction": 0.1, "patience": 1, "hidden_units": 16}
               if objective != "rating" else {})
    _set_train(project, objective=objective, **{"val_fraction": 0.0, **ranking})
    _set_train(project, strategy="default", epochs=2)
    _clear_outputs(project)
    run(project, sys.executable, *_train_args())
    single = [w.numpy() for w in keras.saving.load_model(project / OUTPUTS[0]).weights]

    _set_train(project, strategy="multi_worker", epochs=2, collective_timeout=60)
    _clear_outputs(project)
    worker_dir = _worker_copy(project, "worker-a")
    before = _files(worker_dir)
    chief_log, worker_log = _finish(*_launch(project, worker_dir, tmp_path), tmp_path)
    assert "train: multi_worker, worker 0 of 2 tasks, 2 replica(s)" in chief_log
    assert "wrote nothing" in worker_log
    assert _files(worker_dir) == before  # the worker wrote nothing, not even a checkpoint
    # Both tasks logged the same epochs, from the same weights.
    # An epoch's summary line, not a progress line (which a slow epoch prints in a log too).
    epochs = [[line for line in log.splitlines()
               if line.startswith("epoch ") and " steps (" not in line]
              for log in (chief_log, worker_log)]
    assert len(epochs[0]) == 2 and [e.split(" (")[0] for e in epochs[0]] == \
        [e.split(" (")[0] for e in epochs[1]]
    cluster = [w.numpy() for w in keras.saving.load_model(project / OUTPUTS[0]).weights]
    for a, b in zip(cluster, single, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    assert not (project / "models/checkpoints").exists()  # removed once the outputs are in


def test_a_missing_worker_fails_the_chief_within_the_timeout(project, tmp_path):
    _set_train(project, strategy="multi_worker", epochs=2, collective_timeout=10,
               objective="rating", val_fraction=0.0)
    _clear_outputs(project)
    ports = free_ports(2)
    start = time.monotonic()
    chief = _start(project, _train_args(), tf_config(ports, 0), tmp_path / "chief.log")
    try:
        code = chief.wait(timeout=120)
    finally:
        chief.kill()
    elapsed = time.monotonic() - start
    log = (tmp_path / "chief.log").read_text()
    assert code != 0
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert len(errors(log)) == 1, log[-2000:]
    assert "did not form within 10 s" in errors(log)[0]
    assert not any((project / name).exists() for name in OUTPUTS)


EPOCHS_KILLED = 10


def test_a_killed_worker_fails_the_chief_and_the_rerun_resumes(project, tmp_path):
    # Enough epochs that the chief is still training when the worker dies after epoch 2.
    _set_train(project, strategy="multi_worker", epochs=EPOCHS_KILLED, collective_timeout=20,
               objective="rating", val_fraction=0.0)
    _clear_outputs(project)
    worker_dir = _worker_copy(project, "worker-b")
    chief, worker = _launch(project, worker_dir, tmp_path)
    try:
        deadline = time.monotonic() + 180
        # Epoch 2's summary line (a slow epoch also prints progress lines that start alike).
        while f"epoch 2/{EPOCHS_KILLED}: train MSE" not in (tmp_path / "chief.log").read_text():
            assert chief.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "chief.log").read_text()[-3000:]
            time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = chief.wait(timeout=120)
        elapsed = time.monotonic() - killed
    finally:
        for p in (chief, worker):
            p.kill()
    log = (tmp_path / "chief.log").read_text()
    assert code == 1, log[-3000:]
    assert elapsed < 20 + 15, f"the chief took {elapsed:.0f} s to stop"
    assert len(errors(log)) == 1 and "lost the cluster" in errors(log)[0], log[-3000:]
    assert not any((project / name).exists() for name in OUTPUTS)  # nothing half-written
    assert (project / "models/checkpoints/train.npz").exists()  # the completed epochs
    # The failed run's DVCLive curves are discarded (as after any failed run); its epochs are
    # in the checkpoint, and the rerun replays them.
    assert not (project / LIVE / "plots/metrics/train_loss.tsv").exists()

    # Both tasks again: the chief resumes from its checkpoint, and sends it to the worker.
    chief_log, worker_log = _finish(*_launch(project, worker_dir, tmp_path, "2"), tmp_path, "2")
    assert "train: resuming after epoch" in chief_log
    assert "resuming after epoch" in worker_log and "the chief's checkpoint" in worker_log
    assert all((project / name).exists() for name in OUTPUTS)
    history = (project / LIVE / "plots/metrics/train_loss.tsv").read_text().splitlines()
    every_epoch_once = range(1, EPOCHS_KILLED + 1)  # in order
    assert history == ["step\ttrain_loss", *[f"{e}\t{history[e].split()[1]}"
                                              for e in every_epoch_once]]


def test_worker_refuses_other_strategies_and_a_chief_config(project, tmp_path):
    _set_train(project, strategy="default")
    done = subprocess.run([sys.executable, "-m", "movierec", "worker"], cwd=project,
                          env=env_for(project), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and errors(done.stderr) == [
        "error: worker: train.strategy in params.yaml is 'default' (expected multi_worker: a "
        "worker only joins a multi-machine run)"]
    _set_train(project, strategy="multi_worker")
    done = subprocess.run([sys.executable, "-m", "movierec", "worker"], cwd=project,
                          env={**env_for(project), "TF_CONFIG": tf_config(free_ports(2), 0)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and len(errors(done.stderr)) == 1
    assert "the chief: run the train stage here" in done.stderr
    done = subprocess.run([sys.executable, "-m", "movierec", "worker"], cwd=project,
                          env={**env_for(project), "TF_CONFIG": "{not json"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "TF_CONFIG: received '{not json'" in done.stderr
