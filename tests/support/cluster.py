"""Helpers for the tests that run a tf.distribute cluster of processes on 127.0.0.1."""

import json
import socket
from pathlib import Path

# Trains the loop under a strategy in a fresh Python (its docstring lists the options).
CHILD = Path(__file__).parent / "distributed_child.py"


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (all bound at once, so never the same one twice)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    """TF_CONFIG for task ``index`` of a cluster of workers on ``ports`` (task 0 is the chief)."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def errors(text: str) -> list[str]:
    """The one-line errors a process printed."""
    return [line for line in text.splitlines() if line.startswith("error:")]
