"""TF_CONFIG, read and checked before TensorFlow starts."""

import json

import pytest

from movierec.core.errors import ParamsError
from movierec.train import tf_config


def test_tf_config_is_read_and_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ParamsError, match="needs the TF_CONFIG environment variable"):
        tf_config.read_tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(ParamsError, match="an index into cluster"):
        tf_config.read_tf_config()
    two = {"worker": ["a:1", "b:1"]}
    assert tf_config.is_chief_task({"cluster": two, "task": {"type": "worker", "index": 0}})
    assert not tf_config.is_chief_task({"cluster": two, "task": {"type": "worker",
                                                                   "index": 1}})
    with_chief = {"chief": ["c:1"], **two}  # then the chief, not worker 0, runs the stage
    assert tf_config.is_chief_task({"cluster": with_chief, "task": {"type": "chief",
                                                                      "index": 0}})
    assert not tf_config.is_chief_task({"cluster": with_chief, "task": {"type": "worker",
                                                                          "index": 0}})


def test_a_task_must_run_as_what_tf_config_names_it(monkeypatch):
    two = {"cluster": {"worker": ["a:1", "b:1"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps({**two, "task": {"type": "worker", "index": 1}}))
    assert tf_config.task_config("worker")["task"]["index"] == 1
    with pytest.raises(ParamsError, match=r"names this task worker 1, a non-chief task: run "
                                          r"`python -m movierec worker` here"):
        tf_config.task_config("chief")
    monkeypatch.setenv("TF_CONFIG", json.dumps({**two, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ParamsError, match="names this task worker 0, the chief: run the train "
                                          "stage here"):
        tf_config.task_config("worker")
