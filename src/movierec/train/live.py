"""The train stage's per-epoch metrics, live, through DVCLive, and read back for the figures.

DVCLive writes ``<dir>/metrics.json`` (the latest epoch's figures, with ``step`` = the epoch)
and ``<dir>/plots/metrics/<name>.tsv`` (one curve per figure, ``step`` = the epoch) after every
epoch, so ``dvc exp show`` follows a running or queued experiment and ``dvc plots show`` draws
the curves while it trains. Settings that keep the files byte-reproducible and ``dvc.yaml``
hand-written: no timestamps, no report, ``dvcyaml=False``, ``save_dvc_exp=False`` (the stage
runs under ``dvc repro`` / ``dvc exp run``, which record the experiment themselves).

With ``train.refit`` the early-stopped selection run is logged under ``selection/`` and the
refit, whose model is the one saved, under the plain names.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pandas as pd

from movierec.core.errors import DataError

EPOCH = "epoch"


class EpochLog:
    """Logs a run's history, an epoch at a time; created lazily, so that a stage that fails
    before its first epoch (bad input) writes nothing."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._live = None
        self._logged: dict[str | None, int] = {}

    def update(self, history: pd.DataFrame, run: str | None = None) -> None:
        """Logs the rows of ``history`` not logged yet (all of them after a resume, so the
        files match an uninterrupted run's). ``run``: None, or a prefix such as
        ``selection``."""
        if self._live is None:
            from dvclive import Live  # imports DVC: only in the stage that logs

            self._live = Live(str(self.directory), report=None, save_dvc_exp=False,
                              dvcyaml=False)
        prefix = f"{run}/" if run else ""
        columns = [c for c in history.columns if c != EPOCH]
        for _, row in history.iloc[self._logged.get(run, 0):].iterrows():
            self._live.step = int(row[EPOCH])
            for column in columns:
                self._live.log_metric(prefix + column, float(row[column]))
            self._live.make_summary()
        self._logged[run] = len(history)

    def close(self) -> None:
        if self._live is not None:
            self._live.end()

    def discard(self) -> None:
        """After a failed run (diverged, stopped, any error): removes what DVCLive wrote for
        its epochs, so that no curves of an unfinished run look like a shorter finished run's;
        a stage that failed before its first epoch has written nothing."""
        if self._live is None:
            return
        shutil.rmtree(self._live.plots_dir, ignore_errors=True)
        Path(self._live.metrics_file).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # only if nothing else is in it
        self._live, self._logged = None, {}


def read_history(directory: str | Path) -> pd.DataFrame:
    """The saved model's per-epoch curves from a DVCLive directory: an ``epoch`` column and
    one column per figure (``selection/`` curves left out)."""
    folder = Path(directory) / "plots" / "metrics"
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise DataError(f"{folder}: no per-epoch metrics (*.tsv); expected the train stage's "
                        "DVCLive output there")
    history = None
    for path in files:
        curve = pd.read_csv(path, sep="\t").rename(columns={"step": EPOCH})
        history = curve if history is None else history.merge(curve, on=EPOCH, how="outer")
    return history.sort_values(EPOCH).reset_index(drop=True)
