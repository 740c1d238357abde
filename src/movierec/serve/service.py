"""The loaded outputs behind the HTTP service, swapped for new ones when the pipeline replaces them.

A thread looks at dvc.lock every ``poll_s`` seconds. When the outputs it records change (a
`dvc repro` or `dvc exp apply`) and the recommend stage has run on the new model, a new
:class:`~movierec.serve.snapshot.Snapshot` is loaded beside the one serving, then put in its
place by a single assignment: a request reads ``service.current`` once and answers from that
snapshot alone, so no request sees a half-loaded model. A new snapshot that fails to load
leaves the old one serving, with a logged line, and is not retried until dvc.lock changes again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from movierec.core.paths import pipeline_paths
from movierec.serve.lock import LockState, read_lock
from movierec.serve.snapshot import Snapshot


def _short(state: LockState | None) -> str:
    md5 = (state.md5.get("model") if state else None) or "unrecorded"
    return f"model {md5[:8]}"


class Service:
    """The snapshot that answers requests, and the watcher that replaces it."""

    def __init__(self, root: str | Path, poll_s: float = 2.0,
                 log: Callable[[str], None] = print):
        self.root = Path(root)
        self.paths = pipeline_paths(self.root)
        self.poll_s = poll_s
        self.log = log
        self.current: Snapshot = Snapshot.load(self.root)
        self._seen_key = self.current.info.lock.key if self.current.info.lock else None
        self._lock_stamp = self._stamp()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.root / "dvc.lock").stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self) -> bool:
        """Loads and swaps in the outputs dvc.lock now records, if they are new and complete;
        True when it swapped."""
        stamp = self._stamp()
        if stamp == self._lock_stamp:
            return False
        state = read_lock(self.root, self.paths)
        if state is None:  # gone, or caught mid-rewrite: looked at again on the next poll
            return False
        self._lock_stamp = stamp
        if state.key == self._seen_key:
            return False
        if not state.consistent:
            self.log(f"serve: dvc.lock records {_short(state)}, but the recommend stage has not "
                     f"run on it yet; still serving {_short(self.current.info.lock)}")
            return False
        self._seen_key = state.key
        try:
            new = Snapshot.load(self.root, state)
        except Exception as exc:  # whatever fails, the old model keeps serving
            self.log(f"serve: the new outputs ({_short(state)}) failed to load "
                     f"({type(exc).__name__}: {exc}); still serving "
                     f"{_short(self.current.info.lock)}")
            return False
        old = self.current
        self.current = new
        self.log(f"serve: swapped {_short(old.info.lock)} for {_short(state)} (loaded in "
                 f"{new.info.load_seconds:.1f} s)")
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception as exc:  # the watcher outlives any one look at the files
                self.log(f"serve: looking for new outputs failed ({type(exc).__name__}: {exc}); "
                         f"still serving {_short(self.current.info.lock)}")

    def start(self) -> None:
        if self.poll_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="dvc.lock watcher",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
