"""Keeps TensorFlow's start-up chatter out of a stage's log, and only that.

TensorFlow's C++ side writes half a dozen lines to file descriptor 2 when it loads and when it
looks for a GPU (oneDNN notices, "Could not find cuda drivers", an ``E0000 ... failed call to
cuInit`` that reads like a failure on every CPU run). They come from C++ before Python can
configure anything, so they are filtered where they land: stderr is replaced by a pipe and a
thread forwards every line except those. ``TF_CPP_MIN_LOG_LEVEL`` is not used because hiding
the cuInit line with it would hide every other C++ error too.

An entry point installs it by importing ``movierec.core.quiet_start`` before anything imports
TensorFlow (importing this module has no effect of its own, so tests and library users keep
their stderr). The train stage's own no-GPU line replaces the chatter
(``train.distribute.device_line``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading

# Lines that TensorFlow writes while loading or probing for GPUs; matched whole, so that any
# other line (a real error, a traceback, a warning of ours) passes untouched.
_ABSL_PREAMBLE = ("WARNING: All log messages before absl::InitializeLog() is called are written "
                  "to STDERR")
# The second line of cpu_feature_guard.cc's notice, which has no log prefix of its own.
_CPU_FEATURES = re.compile(r"To enable the following instructions: [\w, ]+, in other operations, "
                           r"rebuild TensorFlow with the appropriate compiler flags\.")
_GLOG = re.compile(r"[IWE]\d{4} [\d:.]+ +\d+ (?P<source>[\w.]+):\d+\] (?P<message>.*)")
# (source file, start of message): the start-up notices and the GPU probe's reports.
_CHATTER = (
    ("port.cc", "oneDNN custom operations are on"),
    ("cudart_stub.cc", ""),
    ("cuda_platform.cc", "failed call to cuInit"),
    ("cuda_diagnostics.cc", ""),
    ("cuda_executor.cc", "could not open file to read NUMA node"),
    ("cpu_feature_guard.cc", "This TensorFlow binary is optimized"),
    ("gpu_device.cc", "Cannot dlopen some GPU libraries"),
    ("cuda_fft.cc", "Unable to register"),
    ("cuda_dnn.cc", "Unable to register"),
    ("cuda_blas.cc", "Unable to register"),
    ("computation_placer.cc", "computation placer already registered"),
)


def is_chatter(line: str) -> bool:
    """True for a line of TensorFlow's start-up chatter (without its line ending)."""
    line = line.rstrip("\r\n")
    if line == _ABSL_PREAMBLE or _CPU_FEATURES.fullmatch(line):
        return True
    match = _GLOG.fullmatch(line)
    if match is None:
        return False
    source, message = match["source"], match["message"]
    return any(source == s and message.startswith(m) for s, m in _CHATTER)


def filter_chunks(pending: bytes, chunk: bytes) -> tuple[bytes, bytes]:
    """Splits ``pending + chunk`` into what can be forwarded now and what waits for the rest
    of its line. Complete lines are forwarded unless they are chatter; a partial line waits
    only while it could still become chatter (so a progress bar's ``\\r`` updates and prompts
    pass at once)."""
    data = pending + chunk
    out = []
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        line = data[start:end + 1]
        if not is_chatter(line.decode("utf-8", "replace")):
            out.append(line)
        start = end + 1
    rest = data[start:]
    if rest and not _could_be_chatter(rest):
        out.append(rest)
        rest = b""
    return b"".join(out), rest


def _could_be_chatter(partial: bytes) -> bool:
    text = partial.decode("utf-8", "replace")
    if _ABSL_PREAMBLE.startswith(text) or "To enable the following instructions:".startswith(
            text[:37]):
        return True
    return re.match(r"[IWE]\d{0,4}( |$)", text) is not None and "\r" not in text


class _Filter:
    def __init__(self) -> None:
        sys.stderr.flush()
        self.original = os.dup(2)  # where stderr really goes
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.read = read
        self.thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self.read, 65536):
            ready, pending = filter_chunks(pending, chunk)
            if ready:
                os.write(self.original, ready)
        if pending and not is_chatter(pending.decode("utf-8", "replace")):
            os.write(self.original, pending)

    def close(self) -> None:
        """Puts stderr back and forwards what is left (at exit)."""
        with contextlib.suppress(OSError, ValueError):  # stderr may already be closed
            sys.stderr.flush()
        os.dup2(self.original, 2)  # closes the pipe's last write end: the pump sees EOF
        self.thread.join(timeout=5)


_filter: _Filter | None = None


def install() -> None:
    """Filters fd 2 for the rest of the process; idempotent. ``MOVIEREC_TF_CHATTER=1`` keeps
    every line (to see what the filter drops)."""
    global _filter
    if _filter is None and os.environ.get("MOVIEREC_TF_CHATTER") != "1":
        _filter = _Filter()


def original_stderr() -> int:
    """The file descriptor of the real stderr: for output that must not wait on the filter
    (a progress bar, a child process that may outlive this one)."""
    return _filter.original if _filter is not None else 2
