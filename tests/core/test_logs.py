"""What a stage prints and logs: TensorFlow's start-up chatter filtered (real errors kept),
progress within epochs, and the DVCLive per-epoch files (byte-reproducible, resumable)."""

import io
import subprocess
import sys

import pandas as pd
import pytest

from movierec.core.errors import DataError
from movierec.core.quiet import filter_chunks, is_chatter
from movierec.train import progress
from movierec.train.live import EpochLog, read_history

# Lines as TensorFlow 2.21 printed them in this project's CI log (a CPU machine).
CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795969094.370587   31920 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1795969094.370881   31920 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1795969097.021826   31920 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "E0000 00:00:1795969097.021826   31920 collective_ops.cc:120] Collective ops is aborted by: "
    "Socket closed",
    "W0000 00:00:1795969097.021826   31920 op_level_cost_estimator.cc:699] Error in "
    "PredictCost() for the op",
    "E0000 00:00:1795969097.021826   31920 cuda_platform.cc:60] something else went wrong",
    "Traceback (most recent call last):",
    "error: train: lost the cluster (UnavailableError: socket closed)",
    "Illegal instruction",
]


@pytest.mark.parametrize("line", CHATTER)
def test_start_up_chatter_is_recognised(line):
    assert is_chatter(line) and is_chatter(line + "\n")


@pytest.mark.parametrize("line", REAL)
def test_other_lines_pass_even_from_the_same_sources(line):
    assert not is_chatter(line)


def test_the_filter_drops_chatter_keeps_the_rest_and_forwards_progress_at_once():
    stream = "".join(f"{line}\n" for line in CHATTER[:2] + REAL[:1] + CHATTER[3:])
    data = stream.encode() + b"\r epoch 1/3:  40%|####  | 4/10"
    out, pending = b"", b""
    for i in range(0, len(data), 7):  # in small chunks, as a pipe may deliver them
        ready, pending = filter_chunks(pending, data[i:i + 7])
        out += ready
    assert out.decode() + pending.decode() == f"{REAL[0]}\n\r epoch 1/3:  40%|####  | 4/10"
    assert pending == b""  # a progress bar's redraw is not held back waiting for a newline


QUIET_CHILD = """
import os, sys
import movierec.core.quiet_start
import tensorflow as tf
tf.config.list_physical_devices("GPU")  # the probe that logs the cuInit failure
print("a line of ours", file=sys.stderr)
os.write(2, b"E0000 00:00:1.5   7 collective_ops.cc:1] a real TensorFlow error\\n")
{tail}
"""


def _child(tail: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", QUIET_CHILD.format(tail=tail)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_a_process_with_the_filter_shows_its_own_lines_and_real_errors_only():
    done = _child("")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "a line of ours", "E0000 00:00:1.5   7 collective_ops.cc:1] a real TensorFlow error"]


@pytest.mark.slow
def test_a_real_failure_still_shows_its_traceback():
    done = _child("import a_module_that_does_not_exist")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[-1] == "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"
    assert "Traceback (most recent call last):" in lines
    assert not any(is_chatter(line) for line in lines)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_lines_at_most_every_few_seconds_and_none_for_a_short_epoch():
    clock, out = _Clock(), io.StringIO()
    lines = progress._Lines("epoch 2/5", 1000, out, clock=clock, seconds=10)
    for _ in range(100):  # 100 calls of 10 steps, 1.5 s apart: 150 s in all
        clock.now += 1.5
        lines.update(10)
    printed = out.getvalue().splitlines()
    assert 13 <= len(printed) <= 15  # one per 10 s at most, none at the very end
    assert printed[0].startswith("epoch 2/5: 70/1,000 steps (7%), ")
    short = progress._Lines("epoch 1/5", 100, io.StringIO(), clock=clock, seconds=10)
    clock.now += 9
    short.update(100)
    assert short.stream.getvalue() == ""


def test_on_a_terminal_the_progress_is_a_bar_redrawn_in_place():
    out = io.StringIO()
    bar = progress.for_epochs(stream=out, terminal=True)("epoch 1/2", 40)
    for _ in range(4):
        bar.update(10)
    bar.close()
    assert "\r" in out.getvalue() and "epoch 1/2" in out.getvalue()
    assert "\n" not in out.getvalue().rstrip("\n")  # no line per update


def _history(epochs: int) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, epochs + 1),
                         "train_loss": [1.0 / e for e in range(1, epochs + 1)],
                         "test_mse": [0.9 + 0.01 * e for e in range(1, epochs + 1)]})


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_the_live_log_is_reproducible_and_a_resumed_log_matches_an_uninterrupted_one(tmp_path):
    full = _history(6)
    log = EpochLog(tmp_path / "a")
    for epoch in range(1, 7):  # an epoch at a time, each call with the whole history so far
        log.update(full.iloc[:epoch])
    log.close()
    resumed = EpochLog(tmp_path / "b")  # a new process after a kill: restored rows, then more
    resumed.update(full.iloc[:4])
    resumed.update(full)
    resumed.close()
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    files = _files(tmp_path / "a")
    assert set(files) == {"metrics.json", "plots/metrics/train_loss.tsv",
                          "plots/metrics/test_mse.tsv"}
    assert files["plots/metrics/train_loss.tsv"].decode().splitlines()[:2] == [
        "step\ttrain_loss", "1\t1.0"]  # the epoch as DVCLive's step; no timestamp column
    pd.testing.assert_frame_equal(read_history(tmp_path / "a")[list(full.columns)], full)


def test_the_selection_run_is_logged_apart_from_the_refit(tmp_path):
    log = EpochLog(tmp_path)
    log.update(_history(3), run="selection")
    log.update(_history(2))
    log.close()
    assert (tmp_path / "plots/metrics/selection/train_loss.tsv").is_file()
    assert read_history(tmp_path)["epoch"].tolist() == [1, 2]  # the saved model's run


def test_reading_a_folder_without_curves_names_it(tmp_path):
    with pytest.raises(DataError, match=r"no per-epoch metrics \(\*\.tsv\)"):
        read_history(tmp_path)


def test_nothing_is_written_before_the_first_epoch(tmp_path):
    EpochLog(tmp_path / "live").close()  # a stage that failed before training
    assert not (tmp_path / "live").exists()
