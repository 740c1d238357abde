"""What every stage entry point shares: argument parsing and one-line errors."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from movierec.errors import MovieRecError


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the params file (params.yaml)")
    return parser


def peak_memory_mib() -> float | None:
    """This process's peak resident memory (Linux VmHWM), or None where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return None


class Terminated(Exception):
    """SIGTERM, raised in the main thread so that temporary files are cleaned up on the way."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def run_stage(main: Callable[[], None]) -> None:
    """Runs a stage: the project's errors become one line on stderr and exit status 1.

    A finished stage ends its log with its wall time and peak memory, the two figures that
    decide whether a dataset fits a machine (``movierec.bench`` reads this line).
    """
    start = time.perf_counter()
    # By default SIGTERM ends the process on the spot; as an exception it unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_terminated)
    # A shell starts background jobs with SIGINT ignored, and Python keeps it ignored; a stage
    # asked to stop should stop either way (and clean up, as KeyboardInterrupt does).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except MovieRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # Outputs are written atomically, so an interrupted stage leaves no partial file.
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated", file=sys.stderr)
        sys.exit(143)
    name = Path(sys.argv[0]).stem
    peak = peak_memory_mib()
    memory = f", peak memory {peak:.0f} MiB" if peak is not None else ""
    print(f"{name}: done in {time.perf_counter() - start:.1f} s{memory}")
