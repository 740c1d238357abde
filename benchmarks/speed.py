"""``python -m benchmarks speed``: how fast, at MovieLens-20M scale, against the tutorial's
own code, in one run on one machine (docs/benchmarks.md has the figures):

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
   default 1M-rating twin, with their test MSE (one process per seed trains the four in turn).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from benchmarks.common import (
    ML20M_RATINGS,
    ROOT,
    Workspace,
    as_tensors,
    ingest_and_preprocess,
    load_split,
    peak_mib,
    print_json,
    report,
    run_child,
    training_loop,
    tutorial_network,
    tutorial_rating_model,
    work_folder,
)

HELP = "the project against the tutorial at ML-20M scale"
TUTORIAL_BATCH = 128
TUTORIAL_LR, TUTORIAL_MOMENTUM = 0.08, 0.9
# Rows on which the tutorial's per-row indexing is timed, then extrapolated to the full size:
# enough for a stable rate, few enough to keep the slow path short.
APPLY_SAMPLE = 200_000
# Differences in mean test MSE below this are float rounding, not accuracy.
SAME_MSE = 1e-4
PATHS = (("tutorial", "tutorial's path: model.fit on numpy, Keras SGD"),
         ("dense", "project loop, Keras' rule on every row (table_updates=dense)"),
         ("lazy", "project loop, Keras' rule computed lazily (default, lazy)"),
         ("sparse", "project loop, TF1 sparse momentum, another rule (sparse)"))
# The default loop under tf.distribute's MirroredStrategy on two logical CPUs: the cost of the
# replicas' exchange (no gain expected from two replicas sharing two cores).
MIRRORED = ("mirrored", "project loop (lazy), strategy=mirrored on 2 logical CPUs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    parser.add_argument("--steps", type=int, default=2_000, help="timed training steps per path")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps before them")
    parser.add_argument("--accuracy-ratings", type=int, default=1_000_000)
    parser.add_argument("--accuracy-epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2023, 7, 11],
                        help="accuracy-check seeds, each path trained once per seed")
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temp dir)")


def run(args: argparse.Namespace) -> None:
    with work_folder(args.workdir) as work:
        bench_speed(work, args.n_ratings, args.steps, args.warmup, args.accuracy_ratings,
                    args.accuracy_epochs, args.seeds)


# --- measurements, in fresh processes (run_child) -------------------------------------------

def child_train_steps(prepared: str, path: str, steps: str, warmup: str) -> None:
    """Times ``steps`` SGD steps at batch 128 after ``warmup`` untimed ones (prints JSON)."""
    steps, warmup = int(steps), int(warmup)
    train_df, n_users, n_movies = load_split(Path(prepared))
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
    print_json({"seconds": seconds, "steps": steps,
                "samples_per_second": steps * TUTORIAL_BATCH / seconds,
                "peak_mib": peak_mib(), "table_rows": [n_users, n_movies]})


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

    params = TrainParams(**train)
    _, loop, _ = training_loop(params, n_users, n_movies)
    users, movies, y = as_tensors(train_df, float(train_df["rating"].mean()))
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
    print_json({"seconds": time.perf_counter() - start, "rows": len(df)})


def child_accuracy(paths: str, n_ratings: str, epochs: str, seed: str) -> None:
    """Test MSE after ``epochs`` epochs on the default split of an ``n_ratings`` twin, for
    each of the comma-separated ``paths`` in turn (prints JSON). One process per seed: an
    accuracy is not a speed, and every path seeds its own weights and shuffles."""
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
    runs = {}
    for path in paths.split(","):
        start = time.perf_counter()
        if path == "tutorial":
            test_mse = _tutorial_fit(data.train, data.test, n_users, n_movies, int(epochs),
                                     int(seed))
        else:
            params = dataclasses.replace(defaults.train, epochs=int(epochs), seed=int(seed),
                                         table_updates=path)
            result = train(data.train, data.test, n_users, n_movies, params, verbose=0)
            test_mse = mse(y_test, predict(result.model, data.test))
        runs[path] = {"test_mse": test_mse, "seconds": time.perf_counter() - start}
    print_json({"runs": runs, "n_train": len(data.train), "n_test": len(data.test)})


def _tutorial_model(n_users: int, n_movies: int, seed: int):
    """The tutorial's network compiled as the tutorial does: MSE, SGD(0.08, momentum=0.9)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = tutorial_network(n_users, n_movies)
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=TUTORIAL_LR,
                                                             momentum=TUTORIAL_MOMENTUM),
                  metrics=["mse"])
    return model


def _tutorial_fit(train_df, test_df, n_users: int, n_movies: int, epochs: int,
                  seed: int) -> float:
    """The tutorial's training: test MSE after ``epochs`` epochs."""
    import numpy as np

    from movierec.evaluate.metrics import mse
    from movierec.nets.keras_model import model_inputs, predict

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
    predicted = predict(tutorial_rating_model(model, n_users, n_movies, mu), test_df)
    return mse(test_df["rating"].to_numpy(np.float64), predicted)


# --- the benchmark's parts, each printing its figures as they are measured --------------------

def bench_speed(work: Path, n_ratings: int, steps: int, warmup: int, accuracy_ratings: int,
                accuracy_epochs: int, seeds: list[int]) -> None:
    """Runs the four parts in the module docstring's order, printing every figure."""
    if not (ROOT / "stages").is_dir():
        raise SystemExit(f"bench speed: no stages/ folder under {ROOT} (expected the project "
                         "checkout)")
    space = Workspace.create(work, n_ratings, epochs=1)
    stages_at_scale(space, n_ratings)
    training_throughput(space.prepared, steps, warmup)
    full_size_stages(space)
    accuracy_check(accuracy_ratings, accuracy_epochs, seeds)


def stages_at_scale(space: Workspace, n_ratings: int) -> None:
    """Part 1: ingest and preprocess, and the tutorial's indexing extrapolated."""
    print(f"== synthetic twin of ML-20M, {n_ratings:,} ratings, real stages", flush=True)
    preprocess = ingest_and_preprocess(space, "ingest (generate the twin)",
                                       "preprocess (index, shuffle, split, write)")
    apply = run_child(__name__, "child_apply_indexing", space.raw / "ratings.parquet",
                      APPLY_SAMPLE)
    print(apply_line(apply, preprocess, n_ratings), flush=True)


def apply_line(apply: dict, preprocess: dict, n_ratings: int) -> str:
    extrapolated = apply["seconds"] * n_ratings / apply["rows"]
    return (f"tutorial's df.apply indexing: {apply['seconds']:.2f} s for {apply['rows']:,} rows, "
            f"extrapolated {extrapolated:.0f} s for {n_ratings:,} (indexing alone, no I/O)"
            + (f"; preprocess stage is {extrapolated / preprocess['seconds']:.0f}x faster"
               if preprocess["seconds"] > 0 else ""))


def training_throughput(prepared: Path, steps: int, warmup: int) -> None:
    """Part 2: each path's time per step, one process each, the tutorial's first."""
    print(f"\n== training throughput, batch {TUTORIAL_BATCH}, {steps:,} timed steps after "
          f"{warmup} untimed, on that split's tables, one process each", flush=True)
    speed = {}
    for key, label in (*PATHS, MIRRORED):
        # mirrored splits the CPU into logical devices, which needs a TensorFlow of its own.
        speed[key] = run_child(__name__, "child_train_steps", prepared, key, steps, warmup,
                               fresh=key == MIRRORED[0])
        print(throughput_line(label, speed[key], steps, speed["tutorial"]), flush=True)
    print(f"mirrored on 2 logical CPUs vs one device (lazy): "
          f"{speed['mirrored']['seconds'] / speed['lazy']['seconds']:.2f}x the time per step",
          flush=True)


def throughput_line(label: str, r: dict, steps: int, tutorial: dict) -> str:
    ratio = r["samples_per_second"] / tutorial["samples_per_second"]
    return (f"{label}: {r['seconds'] / steps * 1e3:.3f} ms/step, "
            f"{r['samples_per_second']:,.0f} samples/s, {ratio:.1f}x the tutorial's; "
            f"peak memory {r['peak_mib']:.0f} MiB")


def full_size_stages(space: Workspace) -> None:
    """Part 3: the train (one epoch), recommend and evaluate stages at full size."""
    print("\n== train (1 epoch), recommend and evaluate stages on that split", flush=True)
    report("train, 1 epoch", space.train())
    top_n = space.out / "top_n.parquet"
    # Only evaluate's input here: 100 candidates keep the stage short (`python -m benchmarks
    # recommend` times the exact one).
    space.set_params("recommend", candidates=100)
    report("recommend (top 10 for every user, 100 candidates each)", space.recommend(top_n))
    report("evaluate", space.evaluate(top_n))


def accuracy_check(n_ratings: int, epochs: int, seeds: list[int]) -> None:
    """Part 4: each path's test MSE over ``seeds``, and the verdict."""
    print(f"\n== accuracy check: {epochs} epochs on the default split of a "
          f"{n_ratings:,}-rating twin; seeds {seeds} (initial weights, shuffling)",
          flush=True)
    mean = {}
    paths = ",".join(key for key, _ in PATHS)
    per_seed = [run_child(__name__, "child_accuracy", paths, n_ratings, epochs, seed)["runs"]
                for seed in seeds]
    for key, label in PATHS:
        runs = [seed_runs[key] for seed_runs in per_seed]
        mean[key] = statistics.fmean(r["test_mse"] for r in runs)
        print(accuracy_line(label, runs), flush=True)
    for line in verdict_lines(mean):
        print(line)


def accuracy_line(label: str, runs: list[dict]) -> str:
    values = [r["test_mse"] for r in runs]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{label}: test MSE {statistics.fmean(values):.4f} mean, {spread:.4f} sd "
            f"({', '.join(f'{v:.4f}' for v in values)}; "
            f"{statistics.fmean(r['seconds'] for r in runs):.0f} s per run)")


def verdict_lines(mean: dict[str, float]) -> list[str]:
    """Each path's difference from the tutorial's mean test MSE, then the check's verdict."""
    # "No worse" allows float rounding: the exact-rule paths see the same weights and the same
    # batches, so they differ from the tutorial's path by float rounding only.
    worse = [key for key in ("dense", "lazy") if mean[key] > mean["tutorial"] + SAME_MSE]
    lines = [f"  {key} - tutorial: {mean[key] - mean['tutorial']:+.5f} mean test MSE"
             for key in ("dense", "lazy", "sparse")]
    lines.append("accuracy check: " + (f"FAILED for {', '.join(worse)}" if worse else
                                       "passed: the project's default (lazy) and dense paths "
                                       "reach a mean test MSE no worse than the tutorial's "
                                       f"(+{SAME_MSE} allowed for float rounding)"))
    lines.append("(sparse is another rule, reported for comparison, not part of the check)")
    return lines
