"""What every stage entry point shares: argument parsing and one-line errors."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from movierec.core.errors import MovieRecError


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


# The stop signal received, if any. Library code with a bare ``except:`` (TensorFlow's
# ``DType.max`` is one) can swallow the exception a handler raises, or turn it into another
# error; the record lets the stage still exit as stopped, and ``raise_if_stopped`` lets long
# loops notice a stop that was swallowed (a stage hands it to them as a hook, e.g. the train
# stage's ``Watch(stop_check=raise_if_stopped)``; only entry points, the stages and the
# multi_worker worker, import this module, never the training code).
_stop_signal: int | None = None


def _on_stop(signum, frame) -> None:
    global _stop_signal
    _stop_signal = signum
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def raise_if_stopped() -> None:
    """Raises again a stop signal that something swallowed; a no-op when none arrived."""
    if _stop_signal is not None:
        _on_stop(_stop_signal, None)


def _exit_stopped(signum: int) -> None:
    # Outputs are written atomically, so a stopped stage leaves no partial file.
    if signum == signal.SIGINT:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    print("error: terminated", file=sys.stderr)
    sys.exit(143)


def run_stage(main: Callable[[], None]) -> None:
    """Runs a stage: the project's errors become one line on stderr and exit status 1.

    A finished stage ends its log with its wall time and peak memory, the two figures that
    decide whether a dataset fits a machine (``benchmarks.common.run_stage`` reads this line).
    """
    start = time.perf_counter()
    # By default SIGTERM ends the process on the spot; as an exception it unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, _on_stop)
    # A shell starts background jobs with SIGINT ignored, and Python keeps it ignored; a stage
    # asked to stop should stop either way (and clean up, as KeyboardInterrupt does).
    signal.signal(signal.SIGINT, _on_stop)
    try:
        main()
    except KeyboardInterrupt:
        _exit_stopped(signal.SIGINT)
    except Terminated:
        _exit_stopped(signal.SIGTERM)
    except BaseException as exc:
        if _stop_signal is not None:  # whatever the signal's exception was turned into
            _exit_stopped(_stop_signal)
        if isinstance(exc, MovieRecError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        raise
    name = Path(sys.argv[0]).stem
    peak = peak_memory_mib()
    memory = f", peak memory {peak:.0f} MiB" if peak is not None else ""
    print(f"{name}: done in {time.perf_counter() - start:.1f} s{memory}")
