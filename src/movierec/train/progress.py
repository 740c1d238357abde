"""Following a training run: the per-epoch callback and progress inside an epoch (a tqdm bar
on a terminal, an occasional line anywhere else).

An epoch at MovieLens-20M scale is over a hundred thousand steps; without this the log is
silent until it ends. On a terminal the bar redraws in place and disappears when the epoch's
own line is printed. In a log (CI, ``dvc repro`` piping, ``dvc exp run --queue``) a redrawn
bar would be hundreds of lines, so there it is one line at most every ``LINE_SECONDS``, and
none for an epoch shorter than that.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from movierec.core import quiet

if TYPE_CHECKING:
    import pandas as pd

LINE_SECONDS = 10.0


class _Lines:
    def __init__(self, label: str, total: int, stream: TextIO,
                 clock: Callable[[], float] = time.monotonic,
                 seconds: float = LINE_SECONDS) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.clock, self.seconds = clock, seconds
        self.start = self.last = clock()
        self.done = 0

    def update(self, steps: int) -> None:
        self.done += steps
        now = self.clock()
        if now - self.last >= self.seconds and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / max(rate, 1e-9)
            print(f"{self.label}: {self.done:,}/{self.total:,} steps "
                  f"({100 * self.done / self.total:.0f}%), {rate:,.0f} steps/s, "
                  f"about {left:.0f} s left", file=self.stream, flush=True)

    def close(self) -> None:
        pass


def for_epochs(stream: TextIO | None = None, terminal: bool | None = None):
    """A factory ``(label, total_steps) -> progress`` for the training loop. ``stream`` and
    ``terminal`` default to the real stderr (past the chatter filter) and whether it is a
    terminal."""
    if terminal is None:
        terminal = os.isatty(quiet.original_stderr())
    if stream is None:
        # The bar goes straight to the real stderr, not through the filter's pipe; lines go
        # to stdout with the epoch lines they sit between.
        stream = (os.fdopen(os.dup(quiet.original_stderr()), "w", buffering=1)
                  if terminal else sys.stdout)

    def make(label: str, total: int):
        if not terminal:
            return _Lines(label, total, stream)
        from tqdm import tqdm  # has update(steps) and close(), as the loop expects

        return tqdm(total=total, desc=label, unit="step", leave=False, file=stream,
                    mininterval=0.5, dynamic_ncols=True)

    return make


class _NoProgress:
    def update(self, steps: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Watch:
    """How a stage follows a run; by default (tests, benchmarks) it does not.

    ``on_epoch(history, run)`` gets the run's whole history after every epoch (``run`` is
    ``selection`` for the early-stopped run before a refit, else None); ``progress(label,
    steps)`` returns an object with ``update(steps)`` and ``close()`` for one epoch.
    ``stop_check()`` is called after every epoch, once its checkpoint is written, and raises
    if the run should stop (a stage passes ``movierec.core.stage.raise_if_stopped``: a stop
    signal that library code swallowed during the epoch).
    """

    on_epoch: Callable[[pd.DataFrame, str | None], None] | None = None
    progress_factory: Callable[[str, int], object] | None = None
    stop_check: Callable[[], None] | None = None

    def check_stop(self) -> None:
        if self.stop_check is not None:
            self.stop_check()

    def epoch(self, history: pd.DataFrame, run: str | None) -> None:
        if self.on_epoch is not None and len(history):
            self.on_epoch(history, run)

    def progress(self, label: str, steps: int):
        return (self.progress_factory(label, steps) if self.progress_factory is not None
                else _NoProgress())
