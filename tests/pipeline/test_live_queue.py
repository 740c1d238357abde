"""`dvc exp show` follows a queued experiment while it trains: DVCLive's dvclive/metrics.json.

One experiment is queued (`dvc exp run --queue`) and started (`dvc queue start`); while its
worker trains in DVC's temporary copy (.dvc/tmp/exps/tmp*), `dvc exp show --json` is polled
every few seconds. It must report the experiment as running with an epoch (`step`) that is
neither the first nor yet the last, then the last epoch once the experiment has finished.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.pipeline import dvc, env_for, kill_leftovers, wait_until_gone

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/self/cwd").exists(),
                       reason="finds the queue's workers through /proc"),
]

# The session project's 20,000 ratings (16,000 to train on) at batch 16 and one SGD step per
# call into TensorFlow: an epoch is slow enough that `dvc exp show`, polled between epochs, sees
# several of them go by. Speed knobs only (steps_per_execution), and a batch small enough to be
# slow yet stable at the default learning rate (batch 8 diverges).
EPOCHS = 6
SLOW = ("train.batch_size=16", "train.steps_per_execution=1")
LIVE = "dvclive/metrics.json"
RUN_TIMEOUT_S = 180  # queue start to a finished experiment, workers' start included
POLL_S = 3.0


@pytest.fixture
def repo(trained_project, tmp_path):
    """A copy of the session's trained project (its run committed), so that the queued
    experiment restores the data stages from the cache and spends its time training."""
    repo = trained_project.copy(tmp_path / "project")
    yield repo
    # Whatever the outcome: no worker, exec-run or stage outlives the test (only processes
    # whose working directory is inside this copy are touched).
    kill_leftovers(repo)


def _exp_show(repo: Path) -> list[dict] | None:
    """`dvc exp show --json`, or None when a call fails (reported, not fatal, mid-run)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                          env=env_for(repo), capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        print(f"dvc exp show failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout)


def _experiment(shown: list[dict], name: str) -> tuple[str | None, int | None, str | None]:
    """(executor state, DVCLive step, why no step) of experiment ``name`` in `dvc exp show
    --json`'s output. State: running, success, failed or queued (None: not listed). No step
    while dvclive/metrics.json is missing (DVC removes a stage's outputs before running it;
    the first epoch writes it) or caught mid-rewrite (DVCLive rewrites it in place, so a read
    can find it empty): exp show then gives the file an error instead of data."""
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if exp.get("name") != name:
                continue
            state = (exp.get("executor") or {}).get("state")
            rev = exp["revs"][0]
            if rev.get("error"):
                return state, None, rev["error"].get("type")
            live = ((rev.get("data") or {}).get("metrics") or {}).get(LIVE) or {}
            if "data" not in live:
                return state, None, (live.get("error") or {}).get("type", "not listed")
            return state, live["data"].get("step"), None
    return None, None, None


def test_exp_show_follows_a_running_queued_experiment(repo):
    queued = dvc(repo, "exp", "run", "--queue", "-S", f"train.epochs={EPOCHS}",
                 *(arg for key in SLOW for arg in ("-S", key)))
    names = re.findall(r"Queued experiment '([^']+)' for future execution", queued)
    assert len(names) == 1, queued
    name = names[0]

    seen: list[tuple[float, str | None, int | None, str | None]] = []  # (s, state, step, why)
    log = repo.parent / "queue-start.log"
    start = time.monotonic()
    try:
        # To a file, not a pipe: the process that spawns the worker keeps its caller's stdout
        # open until the worker quits (see test_dvc_sharing).
        with log.open("w") as fh:
            subprocess.run([sys.executable, "-m", "dvc", "queue", "start"], cwd=repo,
                           env=env_for(repo), stdout=fh, stderr=subprocess.STDOUT, timeout=60,
                           check=True)
        assert "Started '1' new experiments task queue worker" in log.read_text()
        state = None
        while time.monotonic() - start < RUN_TIMEOUT_S:
            shown = _exp_show(repo)
            if shown is not None:
                state, step, why = _experiment(shown, name)
                seen.append((round(time.monotonic() - start, 1), state, step, why))
                if state in ("success", "failed"):
                    break
            time.sleep(POLL_S)
        timeline = "\n".join(f"{t:6.1f} s  {s}  step {n}" + (f" ({why})" if why else "")
                             for t, s, n, why in seen)
        print(f"dvc exp show during the run:\n{timeline}")  # shown with pytest -s
        logs = dvc(repo, "queue", "logs", name)
        assert state == "success", f"after {time.monotonic() - start:.0f} s:\n{timeline}\n{logs}"

        running = [step for _, s, step, _ in seen if s == "running" and step is not None]
        # Seen while it trains: an epoch before the last (dvclive/metrics.json is rewritten after
        # every epoch), and never going backwards.
        assert any(1 <= step < EPOCHS for step in running), timeline
        assert running == sorted(running), timeline
        for epoch in range(1, EPOCHS + 1):
            assert f"epoch {epoch}/{EPOCHS}: " in logs

        final = _exp_show(repo)
        assert final is not None
        assert _experiment(final, name) == ("success", EPOCHS, None)
    finally:
        # Not dvc(): a failure here must not hide the test's own; the fixture kills whatever
        # is left.
        subprocess.run([sys.executable, "-m", "dvc", "queue", "stop", "--kill"], cwd=repo,
                       env=env_for(repo), capture_output=True, timeout=60, check=False)
    assert not wait_until_gone(repo, 60), "queue workers still running after dvc queue stop"
    assert "Worker status: 0 active, 0 idle" in dvc(repo, "queue", "status")
