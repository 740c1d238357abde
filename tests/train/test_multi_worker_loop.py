"""The training loop as a chief and a worker on 127.0.0.1 (multi_worker): its threads, and a
stalled worker.

Every task is a fresh Python (a cluster can only be set up before TensorFlow starts), bounded
in time. Nothing leaves 127.0.0.1.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.cluster import CHILD, errors, free_ports, tf_config
from support.pipeline import ROOT

pytestmark = pytest.mark.e2e


def _pair(tmp_path: Path, chief_options: list[str], worker_options: list[str]
          ) -> list[subprocess.Popen]:
    """The loop's child as a chief and a worker on two free loopback ports (multi_worker);
    each one's stdout and stderr go to task{i}.out and task{i}.err."""
    ports = free_ports(2)
    procs = []
    for i, options in enumerate((chief_options, worker_options)):
        with open(tmp_path / f"task{i}.out", "w") as out, \
                open(tmp_path / f"task{i}.err", "w") as err:
            procs.append(subprocess.Popen(
                [sys.executable, str(CHILD), "multi_worker", "0", "rating",
                 str(tmp_path / f"task{i}.npz"), *options], stdout=out, stderr=err, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                     "TF_CONFIG": tf_config(ports, i)}))
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
    assert errors(log) == [
        "error: child: lost the cluster (DeadlineExceededError: no exchange with the other tasks "
        "completed within 10 s (train.collective_timeout)); a task is missing, died or stalled "
        "past train.collective_timeout; nothing was written, and the next run resumes from the "
        "last checkpoint"], log[-3000:]


