"""``python -m benchmarks pipeline``: the ranking pipeline at MovieLens-20M scale, ingest to
evaluate.

The project's ``ranking`` configuration (experiments.yaml, the README's ranking command), with
every other key at its default, on the full-size synthetic twin: the real stages run one after
the other as ``dvc repro`` runs them (ingest, preprocess, train, recommend, evaluate), each
timed with its peak memory, then the whole. Train reports the epochs early stopping chose and
the refit; evaluate the model's ranking metrics next to EASE's and popularity's. ``--set
key=value`` changes a train key (to time another configuration the same way).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import (
    ML20M_RATINGS,
    Workspace,
    parse_sets,
    ranking_overrides,
    report,
    work_folder,
)

HELP = "the ranking configuration's whole pipeline at ML-20M scale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train key over the ranking configuration's (repeatable)")
    parser.add_argument("--workdir", type=Path, help="keep the data here")


def run(args: argparse.Namespace) -> None:
    train = {**ranking_overrides(), **parse_sets(args.set)}
    with work_folder(args.workdir) as work:
        bench_pipeline(work, args.n_ratings, train)


def bench_pipeline(work: Path, n_ratings: int, train: dict) -> None:
    """Prints each stage's time and peak memory as it ends, then the whole."""
    space = Workspace.create(work, n_ratings, **train)
    print(f"== the ranking pipeline on the synthetic twin of ML-20M, {n_ratings:,} ratings; "
          f"train: {json.dumps(train)}", flush=True)
    top_n = space.out / "top_n.parquet"
    stages = (("ingest", space.ingest), ("preprocess", space.preprocess),
              ("train", space.train), ("recommend", lambda: space.recommend(top_n)),
              ("evaluate", lambda: space.evaluate(top_n)))
    start = time.perf_counter()
    peak = 0
    for name, stage in stages:
        figures = stage()
        report(name, figures)
        peak = max(peak, figures["peak_mib"])
    whole = time.perf_counter() - start
    print(f"whole pipeline, ingest to evaluate: {whole:.0f} s ({whole / 60:.1f} min), the "
          f"largest stage's peak memory {peak:,} MiB", flush=True)
    ranking = json.loads((space.out / "test.json").read_text())["ranking"]
    for row in ("model", "ease", "popularity"):
        figures = ranking.get(row, {})
        print(f"{row}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()
                                     if isinstance(v, float)), flush=True)
