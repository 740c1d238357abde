"""Helpers for the tests that run the pipeline as a user does: a committed copy of the project
in a temporary git repository, DVC and git run in it, and clean-up of the processes it starts."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore",
                 ".dvc/config", "stages", "src", "data/external/README.md"]

def env_for(repo: Path) -> dict:
    env = dict(os.environ)
    # The stage commands say `python`: make it this interpreter, importing the copied package.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The package from this checkout's src/, as `make install` (an editable install) gives a
    # user: the copy's src/ is byte-identical (it is what DVC hashes), and numba's compiled
    # kernels, cached beside the source, are then compiled once per checkout, not per copy.
    env["PYTHONPATH"] = str(ROOT / "src")
    env["DVC_NO_ANALYTICS"] = "1"  # never phone home from a test
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid")
    return env


def run(repo: Path, *cmd: str, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=repo, env={**env_for(repo), **(env or {})}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def dvc(repo: Path, *args: str, env: dict | None = None) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args, env=env)


def make_project(repo: Path, n_ratings: int = 20_000, epochs: int = 1) -> Path:
    """A committed copy of the project in ``repo``, on a tiny twin with few epochs."""
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic"]["n_ratings"] = n_ratings
    params["train"]["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "project")
    # Nothing more, as on a teammate's clone: `dvc repro` writes the offline plots page itself.
    return repo


def copy_project(src: Path, dst: Path) -> Path:
    """A copy of the project repository ``src`` (git history, DVC cache, outputs) at ``dst``.

    DVC's scratch folder stays behind: its state database and locks belong to ``src``."""
    shutil.copytree(src, dst, symlinks=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [])
    return dst


def processes_in(folder: Path) -> list[int]:
    """Ids of the processes working inside ``folder``: the queue's workers and their stages."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or not ours to read
            continue
        if cwd == folder or folder in cwd.parents:
            pids.append(int(entry.name))
    return pids


def wait_until_gone(folder: Path, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (pids := processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(1)
    return pids


def kill_leftovers(repo: Path) -> None:
    """Ends every process whose working directory is inside ``repo`` (a queue's workers,
    exec-runs and stages), politely first."""
    leftovers = processes_in(repo)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not (leftovers := wait_until_gone(repo, 10)):
            break


def artifacts_get(cwd: Path, repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``dvc artifacts get <repo> ...`` run in ``cwd``; the caller checks the outcome."""
    # DVC asks Studio's model registry first whenever a Studio token is configured (environment
    # or global config); offline mode keeps the test on the local repository and off the network.
    env = {**env_for(cwd), "DVC_STUDIO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dvc", "artifacts", "get", str(repo), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
