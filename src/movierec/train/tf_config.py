"""The cluster of a ``multi_worker`` run, from the standard ``TF_CONFIG`` variable, checked.

Plain JSON, no TensorFlow: ``python -m movierec worker`` checks its configuration with it
before it starts TensorFlow, so a misconfigured task fails at once.
"""

from __future__ import annotations

import json
import os

from movierec.core.errors import ParamsError


def read_tf_config() -> dict:
    """The cluster and this task from ``TF_CONFIG``, checked; a one-line error otherwise."""
    expected = ('expected JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}')
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ParamsError(f"train.strategy=multi_worker needs the TF_CONFIG environment "
                          f"variable (received none; {expected})")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as exc:
        raise ParamsError(f"TF_CONFIG: received {text[:200]!r} ({exc.__class__.__name__}: "
                          f"{exc}; {expected})") from None
    if kind not in ("chief", "worker") or not 0 <= index < len(hosts):
        raise ParamsError(f"TF_CONFIG: received task {task} (expected type chief or worker "
                          f"and an index into cluster[{kind!r}], which has {len(hosts)})")
    return config


def is_chief_task(config: dict) -> bool:
    task = config["task"]
    return task["type"] == "chief" or ("chief" not in config["cluster"]
                                       and task["type"] == "worker" and int(task["index"]) == 0)


def task_config(role: str) -> dict:
    """``TF_CONFIG``, checked, for a task that runs as ``role`` (``chief``: the train stage;
    ``worker``: ``python -m movierec worker``); a one-line error when it names the other."""
    config = read_tf_config()
    task = config["task"]
    if is_chief_task(config) != (role == "chief"):
        raise ParamsError(
            f"TF_CONFIG names this task {task['type']} {task['index']}, " + (
                "a non-chief task: run `python -m movierec worker` here, not the train stage"
                if role == "chief" else "the chief: run the train stage here (dvc repro or "
                "dvc exp run), not `python -m movierec worker`"))
    return config
