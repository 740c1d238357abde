"""Training under tf.distribute: mirrored over logical CPUs, and a chief with a worker on
127.0.0.1.

Every run is a fresh Python (logical devices and a cluster can only be set up before
TensorFlow starts), bounded in time. Nothing leaves 127.0.0.1.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.pipeline import ROOT, dvc, env_for, make_project, run

pytestmark = pytest.mark.e2e
CHILD = Path(__file__).parents[1] / "support" / "distributed_child.py"


OBJECTIVES = ("rating", "bce", "bpr", "softmax")


def _child(tmp_path: Path, strategy: str, replicas: int) -> dict[str, tuple[dict, dict]]:
    """{objective: (report, weights)} of one child process training every objective."""
    out = tmp_path / f"{strategy}.npz"
    # A 64-unit side branch: the same code paths, and softmax's pairs cost less than at 400.
    done = subprocess.run([sys.executable, str(CHILD), strategy, str(replicas),
                           ",".join(OBJECTIVES), str(out), "hidden_units=64"],
                          capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {}
    for line in done.stdout.strip().splitlines()[-len(OBJECTIVES):]:
        report = json.loads(line)
        with np.load(tmp_path / f"{strategy}-{report['objective']}.npz") as npz:
            runs[report["objective"]] = report, {name: npz[name] for name in npz.files}
    assert sorted(runs) == sorted(OBJECTIVES)
    return runs


@pytest.fixture(scope="module")
def one_device_and_mirrored(tmp_path_factory):
    """Every objective trained on one device and mirrored on 2 logical CPUs (two processes)."""
    folder = tmp_path_factory.mktemp("mirrored")
    return _child(folder, "default", 0), _child(folder, "mirrored", 2)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_mirrored_on_two_cpus_keeps_replicas_identical_and_matches_one_device(
        one_device_and_mirrored, objective):
    (one, single), (two, mirrored) = (runs[objective] for runs in one_device_and_mirrored)
    assert one["replicas"] == 1 and two["replicas"] == 2 and two["copies"] == 2
    assert two["steps"] == one["steps"] >= 250  # the same global batches
    # Every replica's copy of every variable (weights, momentum, step, row records).
    assert two["spread"] and all(v == 0.0 for v in two["spread"].values()), two["spread"]
    for name, value in single.items():  # the same run up to floating-point order
        np.testing.assert_allclose(mirrored[name], value, rtol=1e-4, atol=2e-6,
                                   err_msg=f"weight {name}, {objective}")
    moved = max(float(np.max(np.abs(v))) for v in single.values())
    assert moved > 0.05  # it trained: a comparison of untouched weights would prove nothing


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _pair(tmp_path: Path, chief_options: list[str], worker_options: list[str]
          ) -> list[subprocess.Popen]:
    """The loop's child as a chief and a worker on two free loopback ports (multi_worker);
    each one's stdout and stderr go to task{i}.out and task{i}.err."""
    ports = _free_ports(2)
    procs = []
    for i, options in enumerate((chief_options, worker_options)):
        with open(tmp_path / f"task{i}.out", "w") as out, \
                open(tmp_path / f"task{i}.err", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, str(CHILD), "multi_worker", "0", "rating",
                 str(tmp_path / f"task{i}.npz"), *options], stdout=out, stderr=err, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                     "TF_CONFIG": _tf_config(ports, i)}))
    return procs


def test_multi_worker_threads_do_not_grow_with_the_steps(tmp_path):
    # The default collective_timeout (300 s): any thread per step that lives for the timeout
    # would be alive still at step 2,000 (TensorFlow's timeout_seconds left two per step).
    options = ["batch_size=16", "epochs=2", "threads_at=500,2000"]  # 1,000 steps an epoch
    procs = _pair(tmp_path, options, options)
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    logs = [(tmp_path / f"task{i}.err").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    reports = [json.loads((tmp_path / f"task{i}.out").read_text().strip().splitlines()[-1])
               for i in range(2)]
    assert [r["chief"] for r in reports] == [True, False]
    for report in reports:
        assert report["replicas"] == 2 and report["steps"] == 2000
        early, late = report["threads"]["500"], report["threads"]["2000"]
        assert late["steps"] - early["steps"] >= 1400
        assert late["threads"] - early["threads"] <= 5, report["threads"]
    # Every step of the loop is compiled: no strategy.run or collective outside a tf.function.
    assert not any("eagerly has significant overhead" in log for log in logs), logs[0][-3000:]
    with np.load(tmp_path / "task0.npz") as chief, np.load(tmp_path / "task1.npz") as worker:
        for name in chief.files:  # the same all-reduced updates on both tasks
            np.testing.assert_array_equal(chief[name], worker[name])


def test_a_stalled_worker_fails_the_chief_within_the_timeout(tmp_path):
    # Alive (its heartbeats go on) but no longer exchanging: only the deadline can end the
    # chief's wait.
    options = ["batch_size=16", "epochs=50", "collective_timeout=10"]
    procs = _pair(tmp_path, options, [*options, "stall_at=300"])
    try:
        deadline = time.monotonic() + 180
        while "stalling" not in (tmp_path / "task1.out").read_text():
            assert procs[0].poll() is None and procs[1].poll() is None and \
                time.monotonic() < deadline, (tmp_path / "task0.err").read_text()[-3000:]
            time.sleep(0.1)
        stalled = time.monotonic()
        code = procs[0].wait(timeout=120)
        elapsed = time.monotonic() - stalled
    finally:
        for p in procs:
            p.kill()
    log = (tmp_path / "task0.err").read_text()
    assert code == 1, log[-3000:]
    assert elapsed < 10 + 10, f"the chief took {elapsed:.0f} s to stop"
    assert _errors(log) == [
        "error: child: lost the cluster (DeadlineExceededError: no exchange with the other tasks "
        "completed within 10 s (train.collective_timeout)); a task is missing, died or stalled "
        "past train.collective_timeout; nothing was written, and the next run resumes from the "
        "last checkpoint"], log[-3000:]


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


def _start(folder: Path, args: list[str], tf_config: str, log: Path) -> subprocess.Popen:
    env = {**env_for(folder), "TF_CONFIG": tf_config}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, *args], cwd=folder, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def _launch(project: Path, worker_dir: Path, tmp_path: Path,
            name: str = "") -> tuple[subprocess.Popen, subprocess.Popen]:
    """A worker (in its own folder) and the chief stage, on two free loopback ports; their
    output goes to chief{name}.log and worker{name}.log."""
    ports = _free_ports(2)
    worker = _start(worker_dir, ["-m", "movierec", "worker"], _tf_config(ports, 1),
                    tmp_path / f"worker{name}.log")
    chief = _start(project, _train_args(), _tf_config(ports, 0), tmp_path / f"chief{name}.log")
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


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


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
    ports = _free_ports(2)
    start = time.monotonic()
    chief = _start(project, _train_args(), _tf_config(ports, 0), tmp_path / "chief.log")
    try:
        code = chief.wait(timeout=120)
    finally:
        chief.kill()
    elapsed = time.monotonic() - start
    log = (tmp_path / "chief.log").read_text()
    assert code != 0
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert len(_errors(log)) == 1, log[-2000:]
    assert "did not form within 10 s" in _errors(log)[0]
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
    assert len(_errors(log)) == 1 and "lost the cluster" in _errors(log)[0], log[-3000:]
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
    assert done.returncode == 1 and _errors(done.stderr) == [
        "error: worker: train.strategy in params.yaml is 'default' (expected multi_worker: a "
        "worker only joins a multi-machine run)"]
    _set_train(project, strategy="multi_worker")
    done = subprocess.run([sys.executable, "-m", "movierec", "worker"], cwd=project,
                          env={**env_for(project), "TF_CONFIG": _tf_config(_free_ports(2), 0)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and len(_errors(done.stderr)) == 1
    assert "the chief: run the train stage here" in done.stderr
    done = subprocess.run([sys.executable, "-m", "movierec", "worker"], cwd=project,
                          env={**env_for(project), "TF_CONFIG": "{not json"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "TF_CONFIG: received '{not json'" in done.stderr
