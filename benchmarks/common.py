"""What every benchmark shares: the checkout's stages run as subprocesses, measurements in fresh
processes, the report line, a working folder laid out as the pipeline's, and the few library
calls that build a network or a training loop.

The library calls that build networks and loops live here, and only here, so that a change to
their signatures is one edit for every benchmark.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project checkout (stages/, params.yaml)
ML20M_RATINGS = 20_000_263  # the size of MovieLens-20M, every benchmark's default
# The last line of every stage's log (movierec.core.stage.run_stage).
DONE_LINE = re.compile(r"^(\w+): done in ([\d.]+) s, peak memory (\d+) MiB$", re.M)
TAIL = 3000  # characters of a failed process's output quoted in the error


def peak_mib() -> float:
    """This process's peak resident memory in MiB (NaN where /proc is missing)."""
    from movierec.core.stage import peak_memory_mib

    return peak_memory_mib() or float("nan")


# ``python -m benchmarks --in-process``: every measurement that can runs in the benchmark's own
# process, a quick check that the benchmark runs end to end (the tests' smoke runs); its times
# and peak memory are not comparable with a normal run's.
IN_PROCESS = False


def run_child(module: str, function: str, *args: object, fresh: bool = False) -> dict:
    """Runs ``function(*args)`` of ``module`` in a fresh Python; returns the dict it prints.

    A fresh process per measurement: TensorFlow's thread settings are fixed at start-up, and
    each figure's peak memory is its own. The arguments travel as strings. Under
    :data:`IN_PROCESS` the call runs here instead, unless ``fresh`` (a measurement that needs
    a TensorFlow set up differently, such as logical devices).
    """
    texts = [str(a) for a in args]
    if IN_PROCESS and not fresh:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            getattr(importlib.import_module(module), function)(*texts)
        return json.loads(out.getvalue().strip().splitlines()[-1])
    call = f"from {module} import {function}; {function}(*{texts!r})"
    done = subprocess.run([sys.executable, "-c", call], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function}{args} failed:\n{done.stderr[-TAIL:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_json(result: dict) -> None:
    """A child's answer to :func:`run_child`: one JSON line, the last of its output."""
    print(json.dumps(result))


def run_stage(name: str, params: Path, *args: str) -> dict:
    """Runs the real stage script; returns the time and peak memory from its last log line,
    and the log lines before it."""
    script = ROOT / "stages" / f"{name}.py"
    done = subprocess.run([sys.executable, str(script), "--params", str(params), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed:\n{done.stderr[-TAIL:]}")
    found = DONE_LINE.findall(done.stdout)
    if not found:
        raise RuntimeError(f"stage {name}: no 'done in' line in its output:\n{done.stdout}")
    _, seconds, peak = found[-1]
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{name}: ")]
    return {"seconds": float(seconds), "peak_mib": int(peak), "log": lines[:-1]}


def report(what: str, stage: dict) -> None:
    """Prints a stage's log, indented, then ``what: <s> s, peak memory <MiB> MiB``."""
    for line in stage["log"]:
        print(f"  {line}")
    print(f"{what}: {stage['seconds']:.1f} s, peak memory {stage['peak_mib']:,} MiB", flush=True)


def load_split(prepared: Path) -> tuple:
    """The train split written by preprocess, with the number of users and of movies."""
    from movierec.core.files import read_parquet

    train_df = read_parquet(prepared / "train.parquet")
    n_users = len(read_parquet(prepared / "users.parquet", columns=["user_idx"]))
    n_movies = len(read_parquet(prepared / "movies.parquet", columns=["movie_idx"]))
    return train_df, n_users, n_movies


@contextlib.contextmanager
def work_folder(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created if missing) or a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        yield work


@dataclasses.dataclass
class Workspace:
    """A benchmark's working folder laid out as the pipeline's, with its own params.yaml (the
    project's defaults but the twin's size), and the stages run on it."""

    root: Path
    settings: dict

    @classmethod
    def create(cls, root: Path, n_ratings: int, **train: object) -> Workspace:
        """The folders and params.yaml for an ``n_ratings`` twin; ``train`` overrides the
        train section."""
        from movierec.core.config import Params

        settings = dataclasses.asdict(Params())
        settings["data"]["synthetic"]["n_ratings"] = n_ratings
        settings["train"].update(train)
        space = cls(root, settings)
        space.write_params()
        for folder in (space.download, space.raw, space.prepared, space.models, space.out):
            folder.mkdir(exist_ok=True)
        return space

    def write_params(self) -> None:
        import yaml

        self.params.write_text(yaml.safe_dump(self.settings))

    def set_params(self, section: str, **values: object) -> None:
        """Changes ``values`` in one section of params.yaml, for the stages run after."""
        self.settings[section].update(values)
        self.write_params()

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def download(self) -> Path:
        return self.root / "download"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def model(self) -> Path:
        return self.models / "model.keras"

    def split(self, name: str) -> Path:
        """A file preprocess writes: ``train``, ``test``, ``users`` or ``movies``."""
        return self.prepared / f"{name}.parquet"

    def served_paths(self) -> dict[str, Path]:
        """The files the ``recommend`` command loads (movierec.serve.query.Recommender)."""
        return {"model": self.model, "train": self.split("train"),
                "user_index": self.split("users"), "movie_index": self.split("movies")}

    def ingest(self) -> dict:
        return run_stage("ingest", self.params, "--download-dir", str(self.download),
                         "--ratings", str(self.raw / "ratings.parquet"),
                         "--movies", str(self.raw / "movies.parquet"))

    def preprocess(self) -> dict:
        return run_stage("preprocess", self.params,
                         "--ratings", str(self.raw / "ratings.parquet"),
                         "--movies", str(self.raw / "movies.parquet"),
                         "--train", str(self.split("train")), "--test", str(self.split("test")),
                         "--user-index", str(self.split("users")),
                         "--movie-index", str(self.split("movies")))

    def train(self) -> dict:
        return run_stage("train", self.params, "--train", str(self.split("train")),
                         "--test", str(self.split("test")),
                         "--user-index", str(self.split("users")),
                         "--movie-index", str(self.split("movies")), "--model", str(self.model),
                         "--portable", str(self.models / "portable"),
                         "--live", str(self.out / "live"),
                         "--metrics", str(self.out / "train.json"))

    def recommend(self, top_n: Path) -> dict:
        return run_stage("recommend", self.params, "--model", str(self.model),
                         "--train", str(self.split("train")),
                         "--user-index", str(self.split("users")),
                         "--movie-index", str(self.split("movies")), "--out", str(top_n))

    def evaluate(self, top_n: Path) -> dict:
        out = self.out
        figures = [a for name in ("loss", "mse", "by-star", "histogram")
                   for a in (f"--{name}-png", str(out / f"{name}.png"))]
        return run_stage("evaluate", self.params, "--model", str(self.model),
                         "--train", str(self.split("train")), "--test", str(self.split("test")),
                         "--top-n", str(top_n), "--user-index", str(self.split("users")),
                         "--movie-index", str(self.split("movies")),
                         "--history", str(out / "live"), "--metrics", str(out / "test.json"),
                         "--per-star", str(out / "per_star.csv"),
                         "--curves", str(out / "curves.csv"),
                         "--ranking-bars", str(out / "ranking.csv"), *figures)


def ingest_and_preprocess(space: Workspace, ingest_label: str = "ingest",
                          preprocess_label: str = "preprocess") -> dict:
    """The real ingest and preprocess stages, each reported; returns preprocess's figures."""
    report(ingest_label, space.ingest())
    preprocess = space.preprocess()
    report(preprocess_label, preprocess)
    return preprocess


def trained_model(space: Workspace, n_ratings: int, epochs: int) -> None:
    """The split and the model by the real stages, unless the folder holds them (the recommend
    and serve benchmarks' first part)."""
    print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings; the model of {epochs} epoch(s) "
          "of the tutorial's defaults", flush=True)
    if space.model.is_file():
        print(f"(reusing the model and split in {space.root})")
        return
    ingest_and_preprocess(space)
    report("train", space.train())


# --- the library's network, loop and scorer builders (the benchmarks' only call sites) --------

def tutorial_spec(n_users: int, n_movies: int, train_mean: float = 0.0):
    """The tutorial's network as a ``NetSpec``: residual, 10 latent factors, 400 hidden
    units, no dropout, trained on ratings."""
    from movierec.nets.spec import NetSpec

    return NetSpec("residual", n_users, n_movies, latent_dim=10, hidden_units=400,
                   train_mean=train_mean)


def tutorial_network(n_users: int, n_movies: int):
    """The tutorial's network, uncompiled (centred output)."""
    from movierec.nets.keras_model import build_model

    return build_model(tutorial_spec(n_users, n_movies))


def tutorial_rating_model(centred, n_users: int, n_movies: int, train_mean: float):
    """The tutorial's centred network wrapped to predict stars (its output + ``train_mean``),
    as the train stage saves it."""
    from movierec.nets.keras_model import for_saving

    return for_saving(centred, tutorial_spec(n_users, n_movies, train_mean))


def training_loop(params, n_users: int, n_movies: int, sampler=None) -> tuple:
    """The train stage's seeded centred model, its training loop and its ``NetSpec`` for
    ``params`` (a ``TrainParams``; the softmax objective draws its pools from ``sampler``)."""
    from movierec.nets.spec import NetSpec
    from movierec.train.training import setup

    centred, loop = setup(params, n_users, n_movies, sampler=sampler)
    return centred, loop, NetSpec.for_training(params, n_users, n_movies)


def scoring_weights(model, spec):
    """The weights the project's scorer reads, from a Keras model built from ``spec``."""
    from movierec.nets import scoring
    from movierec.nets.keras_model import weights_of

    return scoring.from_weights(spec, weights_of(model, spec))


def saved_scoring_weights(path: Path):
    """The scorer's weights of the model the train stage saved at ``path``."""
    from movierec.nets.keras_model import load_net

    return scoring_weights(*load_net(path))


def as_tensors(df, mu: float) -> tuple:
    """(users, movies, rating - ``mu``) of a ratings DataFrame as the loop's input tensors."""
    import numpy as np
    import tensorflow as tf

    from movierec.core.columns import MOVIE_IDX_COL, RATING_COL, USER_IDX_COL

    return (tf.constant(df[USER_IDX_COL].to_numpy(np.int32)),
            tf.constant(df[MOVIE_IDX_COL].to_numpy(np.int32)),
            tf.constant(df[RATING_COL].to_numpy(np.float32) - np.float32(mu)))


# --- the project's named ranking configuration ----------------------------------------------

RANKING = "ranking"  # the named configuration of experiments.yaml


def ranking_overrides() -> dict:
    """The train keys of experiments.yaml's ``ranking`` configuration, without ``train.``."""
    import yaml

    named = yaml.safe_load((ROOT / "experiments.yaml").read_text())[RANKING]
    return {k.split(".", 1)[1]: v for k, v in named.items() if k.startswith("train.")}


def parse_sets(items: list[str]) -> dict:
    """``--set KEY=VALUE`` arguments as {train key: value}, values parsed as YAML (as DVC's
    ``-S`` parses them), ``train.`` optional."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: received {item!r} (expected KEY=VALUE, a train key)")
        out[key.removeprefix("train.")] = yaml.safe_load(value)
    return out
