"""Training under tf.distribute's mirrored strategy over two logical CPUs, against one device.

Every run is a fresh Python (logical devices can only be set up before TensorFlow starts),
bounded in time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.cluster import CHILD
from support.pipeline import ROOT

pytestmark = pytest.mark.e2e

OBJECTIVES = ("rating", "bce", "bpr", "softmax", "softmax-sampled")


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

