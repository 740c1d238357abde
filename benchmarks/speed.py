"""Benchmarks (not tests): ``python -m benchmarks.speed speed``, ``... ingest``
(``benchmarks.ingest``), ``... recommend`` (``benchmarks.recommend``) and ``... ranking``
(``benchmarks.ranking``).

``speed`` answers "how fast, at MovieLens-20M scale, against the tutorial's own code", in one
run on one machine (see ``main`` for its steps and ``README.md`` for figures):

1. the real ingest and preprocess stages on the full-size synthetic twin (20,000,263 ratings),
   with their times and peak memory; the tutorial's per-row ``df.apply`` indexing is timed on a
   sample and extrapolated to the same number of rows;
2. training throughput at full table sizes, the same number of SGD steps at batch 128 with
   (a) the tutorial's path: ``model.fit`` on numpy arrays with ``SGD(0.08, momentum=0.9)``,
   (b) the project's loop computing Keras' rule for every row (``train.table_updates=dense``),
   (c) the project's default loop, the same rule computed lazily (``lazy``),
   (d) the project's loop with TensorFlow 1's sparse momentum (``sparse``, another rule),
   (e) the default loop under ``train.strategy=mirrored`` on 2 logical CPUs (the overhead of
   tf.distribute's exchange), each in a fresh process;
3. the real train (one epoch), recommend (100 candidates per user: here it only feeds evaluate)
   and evaluate stages at full size, for their peak memory;
4. an accuracy check: the same four paths trained for the same epochs on the same split of the
   default 1M-rating twin, with their test MSE.

"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# --- speed -------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]  # the project checkout (stages/, params.yaml)
TUTORIAL_BATCH = 128
TUTORIAL_LR, TUTORIAL_MOMENTUM = 0.08, 0.9
# Rows on which the tutorial's per-row indexing is timed (the anchors' figure is per 200,000).
APPLY_SAMPLE = 200_000
# Differences in mean test MSE below this are float rounding, not accuracy.
SAME_MSE = 1e-4
_DONE = re.compile(r"^(\w+): done in ([\d.]+) s, peak memory (\d+) MiB$", re.M)


def _peak_mib() -> float:
    from movierec.core.stage import peak_memory_mib

    return peak_memory_mib() or float("nan")


def _child(function: str, *args: object, module: str = "benchmarks.speed") -> dict:
    """Runs ``function(*args)`` of this module in a fresh Python; returns the dict it prints.

    A fresh process per measurement: TensorFlow's thread settings are fixed at start-up, and
    each figure's peak memory is its own.
    """
    call = f"from {module} import {function}; {function}(*{[str(a) for a in args]!r})"
    done = subprocess.run([sys.executable, "-c", call], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{function}{args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_stage(name: str, params: Path, *args: str) -> dict:
    """Runs the real stage script; returns the time and peak memory from its last log line."""
    script = ROOT / "stages" / f"{name}.py"
    done = subprocess.run([sys.executable, str(script), "--params", str(params), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed:\n{done.stderr[-3000:]}")
    found = _DONE.findall(done.stdout)
    if not found:
        raise RuntimeError(f"stage {name}: no 'done in' line in its output:\n{done.stdout}")
    _, seconds, peak = found[-1]
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{name}: ")]
    return {"seconds": float(seconds), "peak_mib": int(peak), "log": lines[:-1]}


def _load_split(prepared: Path) -> tuple:
    from movierec.core.files import read_parquet

    train_df = read_parquet(prepared / "train.parquet")
    n_users = len(read_parquet(prepared / "users.parquet", columns=["user_idx"]))
    n_movies = len(read_parquet(prepared / "movies.parquet", columns=["movie_idx"]))
    return train_df, n_users, n_movies


def child_train_steps(prepared: str, path: str, steps: str, warmup: str) -> None:
    """Times ``steps`` SGD steps at batch 128 after ``warmup`` untimed ones (prints JSON)."""
    steps, warmup = int(steps), int(warmup)
    train_df, n_users, n_movies = _load_split(Path(prepared))
    rows = (steps + warmup) * TUTORIAL_BATCH
    if rows > len(train_df):
        raise ValueError(f"{steps + warmup} steps need {rows:,} rows; the split has "
                         f"{len(train_df):,}")
    train_df = train_df.iloc[:rows]  # the split is already shuffled by preprocess
    if path == "tutorial":
        seconds = _tutorial_steps(train_df, n_users, n_movies, warmup)
    elif path == "mirrored":
        seconds = _project_steps(train_df, n_users, n_movies, warmup, table_updates="lazy",
                                 strategy="mirrored", cpu_replicas=2)
    else:
        seconds = _project_steps(train_df, n_users, n_movies, warmup, table_updates=path)
    print(json.dumps({"seconds": seconds, "steps": steps,
                      "samples_per_second": steps * TUTORIAL_BATCH / seconds,
                      "peak_mib": _peak_mib(), "table_rows": [n_users, n_movies]}))


def _tutorial_steps(train_df, n_users: int, n_movies: int, warmup: int) -> float:
    """The tutorial's own training: model.fit on numpy arrays, SGD with momentum, batch 128."""
    import keras
    import numpy as np

    from movierec.nets.keras_model import model_inputs

    model = _tutorial_model(n_users, n_movies, seed=0)
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == warmup:
                marks["start"] = time.perf_counter()

        def on_train_end(self, logs=None):
            marks["end"] = time.perf_counter()

    y = train_df["rating"].to_numpy(np.float32)
    model.fit(model_inputs(train_df), y - y.mean(), batch_size=TUTORIAL_BATCH, epochs=1,
              shuffle=True, verbose=0, callbacks=[Clock()])
    return marks["end"] - marks["start"]


def _project_steps(train_df, n_users: int, n_movies: int, warmup: int,
                   **train: object) -> float:
    """The train stage's loop with its default params (batch 128, SGD 0.08/0.9) but ``train``."""
    import tensorflow as tf

    from movierec.core.config import TrainParams
    from movierec.train.training import _as_tensors, setup

    params = TrainParams(**train)
    _, loop = setup(params, n_users, n_movies)
    users, movies, y = _as_tensors(train_df, float(train_df["rating"].mean()))
    split = warmup * params.batch_size
    loop.epoch(users[:split], movies[:split], y[:split], params.steps_per_execution)
    timed = [tf.identity(t[split:]) for t in (users, movies, y)]
    start = time.perf_counter()
    loop.epoch(*timed, params.steps_per_execution)
    return time.perf_counter() - start


def child_apply_indexing(ratings: str, sample: str) -> None:
    """The tutorial course's preprocessing, timed on ``sample`` rows (prints JSON).

    The course builds a dict from movieId to a contiguous index and maps every row with
    ``df.apply(lambda row: ..., axis=1)``; userIds are shifted by one, vectorised.
    """
    from movierec.core.files import read_parquet

    # All four columns, as the course reads them: apply(axis=1) builds a row from each.
    df = read_parquet(ratings).iloc[:int(sample)].copy()
    start = time.perf_counter()
    df["userId"] = df["userId"] - 1
    movie2idx = {movie: i for i, movie in enumerate(sorted(set(df["movieId"])))}
    df["movie_idx"] = df.apply(lambda row: movie2idx[row.movieId], axis=1)
    print(json.dumps({"seconds": time.perf_counter() - start, "rows": len(df)}))


def child_accuracy(path: str, n_ratings: str, epochs: str, seed: str) -> None:
    """Test MSE after ``epochs`` epochs on the default split of an ``n_ratings`` twin."""
    import dataclasses

    import numpy as np

    from movierec.core.config import Params
    from movierec.data import synthetic
    from movierec.data.preprocess import prepare
    from movierec.evaluate.metrics import mse
    from movierec.nets.keras_model import predict
    from movierec.train.training import train

    defaults = Params()
    twin = synthetic.generate(int(n_ratings), seed=defaults.data.synthetic.seed)
    data = prepare(twin.ratings, twin.movies, defaults.preprocess.test_fraction,
                   defaults.preprocess.seed)
    n_users, n_movies = len(data.users), len(data.movies)
    y_test = data.test["rating"].to_numpy(np.float64)
    start = time.perf_counter()
    if path == "tutorial":
        test_mse = _tutorial_fit(data.train, data.test, n_users, n_movies, int(epochs),
                                 int(seed))
    else:
        params = dataclasses.replace(defaults.train, epochs=int(epochs), seed=int(seed),
                                     table_updates=path)
        result = train(data.train, data.test, n_users, n_movies, params, verbose=0)
        test_mse = mse(y_test, predict(result.model, data.test))
    print(json.dumps({"test_mse": test_mse, "seconds": time.perf_counter() - start,
                      "n_train": len(data.train), "n_test": len(data.test)}))


def _tutorial_model(n_users: int, n_movies: int, seed: int):
    """The tutorial's network compiled as the tutorial does: MSE, SGD(0.08, momentum=0.9)."""
    import keras

    from movierec.nets.keras_model import build_residual_model

    keras.utils.set_random_seed(seed)
    model = build_residual_model(n_users, n_movies, 10, 400)
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=TUTORIAL_LR,
                                                             momentum=TUTORIAL_MOMENTUM),
                  metrics=["mse"])
    return model


def _tutorial_fit(train_df, test_df, n_users: int, n_movies: int, epochs: int,
                  seed: int) -> float:
    """The tutorial's training: test MSE after ``epochs`` epochs."""
    import numpy as np

    from movierec.evaluate.metrics import mse
    from movierec.nets.keras_model import model_inputs, predict, with_offset

    model = _tutorial_model(n_users, n_movies, seed)  # the project's initial weights, per seed
    mu = float(train_df["rating"].to_numpy(np.float64).mean())
    x = model_inputs(train_df)
    y = train_df["rating"].to_numpy(np.float32) - np.float32(mu)
    # The epochs see the same orders as the project's runs (train() draws one permutation per
    # epoch from the seed), so the paths differ only in how they compute the updates. Keras'
    # own shuffle=True is not used: with a global seed set, Keras 3.15 replays one permutation
    # in every epoch (each epoch's iterator restarts its seeded tf.random.shuffle).
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        model.fit([a[order] for a in x], y[order], batch_size=TUTORIAL_BATCH, epochs=1,
                  shuffle=False, verbose=0)
    return mse(test_df["rating"].to_numpy(np.float64), predict(with_offset(model, mu), test_df))


def bench_speed(work: Path, n_ratings: int, steps: int, warmup: int, accuracy_ratings: int,
                accuracy_epochs: int, seeds: list[int]) -> None:
    """Prints every figure as it is measured (a run takes several minutes)."""
    import yaml

    from movierec.core.config import Params

    if not (ROOT / "stages").is_dir():
        raise SystemExit(f"bench speed: no stages/ folder under {ROOT} (expected the project "
                         "checkout, installed with pip install -e)")
    defaults = dataclasses.asdict(Params())
    defaults["data"]["synthetic"]["n_ratings"] = n_ratings
    defaults["train"]["epochs"] = 1
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(defaults))
    d = {name: work / name for name in ("download", "raw", "prepared", "models", "out")}
    for folder in d.values():
        folder.mkdir(exist_ok=True)
    raw, prep = d["raw"], d["prepared"]

    print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings, real stages", flush=True)
    ingest = _run_stage("ingest", params, "--download-dir", str(d["download"]),
                        "--ratings", str(raw / "ratings.parquet"),
                        "--movies", str(raw / "movies.parquet"))
    _report("ingest (generate the twin)", ingest)
    preprocess = _run_stage("preprocess", params, "--ratings", str(raw / "ratings.parquet"),
                            "--movies", str(raw / "movies.parquet"),
                            "--train", str(prep / "train.parquet"),
                            "--test", str(prep / "test.parquet"),
                            "--user-index", str(prep / "users.parquet"),
                            "--movie-index", str(prep / "movies.parquet"))
    _report("preprocess (index, shuffle, split, write)", preprocess)
    apply = _child("child_apply_indexing", raw / "ratings.parquet", APPLY_SAMPLE)
    extrapolated = apply["seconds"] * n_ratings / apply["rows"]
    print(f"tutorial's df.apply indexing: {apply['seconds']:.2f} s for {apply['rows']:,} rows, "
          f"extrapolated {extrapolated:.0f} s for {n_ratings:,} (indexing alone, no I/O)"
          + (f"; preprocess stage is {extrapolated / preprocess['seconds']:.0f}x faster"
             if preprocess["seconds"] > 0 else ""), flush=True)

    print(f"\n== training throughput, batch {TUTORIAL_BATCH}, {steps:,} timed steps after "
          f"{warmup} untimed, on that split's tables, one process each", flush=True)
    paths = (("tutorial", "tutorial's path: model.fit on numpy, Keras SGD"),
             ("dense", "project loop, Keras' rule on every row (table_updates=dense)"),
             ("lazy", "project loop, Keras' rule computed lazily (default, lazy)"),
             ("sparse", "project loop, TF1 sparse momentum, another rule (sparse)"))
    # The default loop under tf.distribute's MirroredStrategy on two logical CPUs: the cost of
    # the replicas' exchange (no gain expected from two replicas sharing two cores).
    mirrored = ("mirrored", "project loop (lazy), strategy=mirrored on 2 logical CPUs")
    speed = {}
    for key, label in (*paths, mirrored):
        speed[key] = r = _child("child_train_steps", prep, key, steps, warmup)
        ratio = r["samples_per_second"] / speed["tutorial"]["samples_per_second"]
        print(f"{label}: {r['seconds'] / steps * 1e3:.3f} ms/step, "
              f"{r['samples_per_second']:,.0f} samples/s, {ratio:.1f}x the tutorial's; "
              f"peak memory {r['peak_mib']:.0f} MiB", flush=True)
    print(f"mirrored on 2 logical CPUs vs one device (lazy): "
          f"{speed['mirrored']['seconds'] / speed['lazy']['seconds']:.2f}x the time per step",
          flush=True)

    print("\n== train (1 epoch), recommend and evaluate stages on that split", flush=True)
    model = d["models"] / "model.keras"
    out = d["out"]
    train = _run_stage("train", params, "--train", str(prep / "train.parquet"),
                       "--test", str(prep / "test.parquet"),
                       "--user-index", str(prep / "users.parquet"),
                       "--movie-index", str(prep / "movies.parquet"), "--model", str(model),
                       "--live", str(out / "live"),
                       "--metrics", str(out / "train.json"))
    _report("train, 1 epoch", train)
    top_n = out / "top_n.parquet"
    # Only evaluate's input here: candidates keep it to ~30 s (`bench recommend` times exact).
    defaults["recommend"]["candidates"] = 100
    params.write_text(yaml.safe_dump(defaults))
    recommend = _run_stage("recommend", params, "--model", str(model),
                           "--train", str(prep / "train.parquet"),
                           "--user-index", str(prep / "users.parquet"),
                           "--movie-index", str(prep / "movies.parquet"), "--out", str(top_n))
    _report("recommend (top 10 for every user, 100 candidates each)", recommend)
    evaluate = _run_stage("evaluate", params, "--model", str(model),
                          "--train", str(prep / "train.parquet"),
                          "--test", str(prep / "test.parquet"), "--top-n", str(top_n),
                          "--user-index", str(prep / "users.parquet"),
                          "--movie-index", str(prep / "movies.parquet"),
                          "--history", str(out / "live"),
                          "--metrics", str(out / "test.json"),
                          "--per-star", str(out / "per_star.csv"),
                          *[a for name in ("loss", "mse", "by-star", "histogram")
                            for a in (f"--{name}-png", str(out / f"{name}.png"))])
    _report("evaluate", evaluate)

    print(f"\n== accuracy check: {accuracy_epochs} epochs on the default split of a "
          f"{accuracy_ratings:,}-rating twin; seeds {seeds} (initial weights, shuffling)",
          flush=True)
    mean = {}
    for key, label in paths:
        runs = [_child("child_accuracy", key, accuracy_ratings, accuracy_epochs, seed)
                for seed in seeds]
        values = [r["test_mse"] for r in runs]
        mean[key] = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{label}: test MSE {mean[key]:.4f} mean, {spread:.4f} sd "
              f"({', '.join(f'{v:.4f}' for v in values)}; "
              f"{statistics.fmean(r['seconds'] for r in runs):.0f} s per run)", flush=True)
    # "No worse" allows float rounding: the exact-rule paths see the same weights and the same
    # batches, and agree with the tutorial's path to about 1e-6 in MSE.
    worse = [key for key in ("dense", "lazy") if mean[key] > mean["tutorial"] + SAME_MSE]
    for key in ("dense", "lazy", "sparse"):
        print(f"  {key} - tutorial: {mean[key] - mean['tutorial']:+.5f} mean test MSE")
    print("accuracy check: " + (f"FAILED for {', '.join(worse)}" if worse else
                                "passed: the project's default (lazy) and dense paths reach a "
                                f"mean test MSE no worse than the tutorial's (+{SAME_MSE} "
                                "allowed for float rounding)"))
    print("(sparse is another rule, reported for comparison, not part of the check)")


def _report(what: str, stage: dict) -> None:
    for line in stage["log"]:
        print(f"  {line}")
    print(f"{what}: {stage['seconds']:.1f} s, peak memory {stage['peak_mib']:,} MiB", flush=True)

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    ingest = sub.add_parser("ingest", help="read an ML-20M-sized release zip")
    ingest.add_argument("--n-ratings", type=int, default=20_000_263)
    ingest.add_argument("--zip", type=Path, help="keep the generated zip here (reused if present)")
    speed = sub.add_parser("speed", help="the project against the tutorial at ML-20M scale")
    speed.add_argument("--n-ratings", type=int, default=20_000_263)
    speed.add_argument("--steps", type=int, default=2_000, help="timed training steps per path")
    speed.add_argument("--warmup", type=int, default=100, help="untimed steps before them")
    speed.add_argument("--accuracy-ratings", type=int, default=1_000_000)
    speed.add_argument("--accuracy-epochs", type=int, default=5)
    speed.add_argument("--seeds", type=int, nargs="+", default=[2023, 7, 11],
                       help="accuracy-check seeds, each path trained once per seed")
    speed.add_argument("--workdir", type=Path, help="keep the data here (default: a temp dir)")
    rec = sub.add_parser("recommend", help="the recommend stage at ML-20M scale")
    rec.add_argument("--n-ratings", type=int, default=20_000_263)
    rec.add_argument("--epochs", type=int, default=1, help="train epochs for the scored model")
    rec.add_argument("--candidates", type=int, nargs="*", default=[100, 300, 1000])
    rec.add_argument("--xla-blocks", type=int, default=20)
    rec.add_argument("--queries", type=int, default=200)
    rec.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")
    rank = sub.add_parser("ranking", help="an epoch with negatives at ML-20M scale")
    rank.add_argument("--n-ratings", type=int, default=20_000_263)
    for name, default in (("steps", 3_000), ("warmup", 100), ("negatives", 4), ("batch", 128),
                          ("probe-users", 1_000)):
        rank.add_argument(f"--{name}", type=int, default=default)
    rank.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")
    args = parser.parse_args(argv)
    if args.what == "ingest":
        from benchmarks.ingest import bench_ingest, report_ingest

        with tempfile.TemporaryDirectory() as tmp:
            report_ingest(bench_ingest(args.n_ratings, args.zip or Path(tmp) / "ml-20m-shaped.zip"))
        return
    if args.what == "ranking":
        from benchmarks.ranking import bench_ranking as run
        extra = (args.steps, args.warmup, args.negatives, args.batch, args.probe_users)
    elif args.what == "recommend":
        from benchmarks.recommend import bench_recommend as run
        extra = (args.epochs, args.candidates, args.xla_blocks, args.queries)
    else:
        run = bench_speed
        extra = (args.steps, args.warmup, args.accuracy_ratings, args.accuracy_epochs, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run(work, args.n_ratings, *extra)


if __name__ == "__main__":
    main()
