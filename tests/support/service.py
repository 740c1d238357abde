"""The recommendation service as the tests start it: `python -m movierec serve` on a free
127.0.0.1 port, and JSON requests to it."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.pipeline import env_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.2)


class Server:
    """The service as a user starts it, in ``root``, its log in ``log``."""

    def __init__(self, root: Path, log: Path):
        self.port, self.log = free_port(), log
        self.base = f"http://127.0.0.1:{self.port}"
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "movierec", "serve", "--port", str(self.port),
                 "--poll", "0.3"], cwd=root, env=env_for(root), stdout=out,
                stderr=subprocess.STDOUT)
        start = time.monotonic()
        wait_for(self._up, 60, f"the service to answer; log:\n{self.text()}")
        self.ready_s = time.monotonic() - start

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.text()
        try:
            return get(self.base, "/health")[0] == 200
        except OSError:
            return False

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
