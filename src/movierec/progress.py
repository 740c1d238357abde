"""Progress inside an epoch: a tqdm bar on a terminal, an occasional line anywhere else.

An epoch at MovieLens-20M scale takes about a minute; without this the log is silent until it
ends. On a terminal the bar redraws in place and disappears when the epoch's own line is
printed. In a log (CI, ``dvc repro`` piping, ``dvc exp run --queue``) a redrawn bar would be
hundreds of lines, so there it is one line at most every ``LINE_SECONDS``, and none for an
epoch shorter than that.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from movierec import quiet

LINE_SECONDS = 10.0


class _Bar:
    def __init__(self, label: str, total: int, stream: TextIO) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="step", leave=False, file=stream,
                        mininterval=0.5, dynamic_ncols=True)

    def update(self, steps: int) -> None:
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()


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
        return (_Bar if terminal else _Lines)(label, total, stream)

    return make
