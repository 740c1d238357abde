"""Every benchmark runs end to end at a toy size, its measurements in the test's own process where
they can (``--in-process``; its figures are not checked here). Its stage runs and the
measurements that need a freshly started TensorFlow are still processes of their own."""

import re

import pytest

from benchmarks import common
from benchmarks.__main__ import main

pytestmark = pytest.mark.slow  # every test here trains or starts processes


@pytest.fixture
def bench(capsys, monkeypatch):
    """Runs ``python -m benchmarks --in-process ARGS`` here; returns what it printed. Here, not
    in a child Python: the test's process has TensorFlow started already."""
    monkeypatch.setattr(common, "IN_PROCESS", False)  # main sets it; restored afterwards

    def run(*args: str) -> str:
        capsys.readouterr()
        main(["--in-process", *args])
        return capsys.readouterr().out
    return run


def test_bench_speed_runs_every_part_and_reports_ratios(bench, tmp_path):
    out = bench("speed", "--n-ratings", "20000", "--steps", "20", "--warmup", "5",
                "--accuracy-ratings", "20000", "--accuracy-epochs", "1", "--seeds", "1",
                "--workdir", str(tmp_path))
    for stage in ("ingest", "preprocess", "train, 1 epoch", "evaluate"):
        assert re.search(rf"^{re.escape(stage)}.*: [\d.]+ s, peak memory [\d,]+ MiB$", out, re.M)
    assert re.search(r"extrapolated \d+ s for 20,000", out)
    ratios = re.findall(r"samples/s, ([\d.]+)x the tutorial's", out)
    assert len(ratios) == 5 and float(ratios[0]) == 1.0  # four paths and mirrored
    assert re.search(r"^mirrored on 2 logical CPUs vs one device \(lazy\): [\d.]+x", out, re.M)
    assert len(re.findall(r"test MSE \d\.\d{4} mean", out)) == 4
    assert re.search(r"^accuracy check: (passed|FAILED)", out, re.M)


def test_bench_recommend_runs_every_part(bench, tmp_path):
    out = bench("recommend", "--n-ratings", "20000", "--candidates", "20", "--xla-blocks", "2",
                "--queries", "20", "--workdir", str(tmp_path))
    assert re.search(r"^recommend, exact: [\d.]+ s, peak memory [\d,]+ MiB$", out, re.M)
    assert re.search(r"x the XLA scorer; largest difference in a score \d\.\de-0[5-9]", out)
    assert re.search(r"candidates 20: .* top 10 identical to the exact top 10 for [\d.]+% of "
                     r"users", out)
    assert re.search(r"per user: median [\d.]+ ms, 95th percentile [\d.]+ ms", out)


def test_bench_ranking_runs_every_objective(bench, tmp_path):
    out = bench("ranking", "--n-ratings", "20000", "--steps", "20", "--warmup", "5",
                "--probe-users", "50", "--workdir", str(tmp_path), "--set", "batch_size=64",
                "--set", "train.pool=sampled")
    for label in ("rating (the tutorial's MSE)", "bce, each rating + 4 sampled negatives",
                  "bpr, 4 (rating, sampled negative) triples per rating",
                  "the ranking configuration (",
                  "the ranking configuration with batch_size=64, pool=sampled: "):
        assert label in out, out
    assert out.count("ms/step") == 5 and "draws redrawn" in out and "1.0x the rating" in out


def test_bench_ingest_reads_the_zip_it_writes(bench, tmp_path):
    archive = tmp_path / "ml-20m-shaped.zip"
    out = bench("ingest", "--n-ratings", "20000", "--zip", str(archive))
    assert archive.is_file()
    assert re.search(r"^ingest: 20,000 ratings from a \d+ MB zip \(\d+ MB of CSV\) in [\d.]+ s$",
                     out, re.M), out
    assert re.search(r"^memory: canonical table \d+ MiB; process peak \d+ MiB, of which \d+ MiB "
                     r"before reading", out, re.M), out


def test_bench_ease_runs_every_part(bench, tmp_path):
    out = bench("ease", "--n-ratings", "20000", "--lambdas", "100,500", "--max-items", "300",
                "--holdout-users", "50", "--compare-items", "0", "--workdir", str(tmp_path))
    assert re.search(r"^hold-out NDCG@10 per lambda: 100 [\d.]+, 500 [\d.]+; chosen (100|500)$",
                     out, re.M), out
    assert re.search(r"^EASE, 300 of [\d,]+ movies, [\d,]+ test users: [\d.]+ s \(grid .* "
                     r"peak memory [\d,]+ MiB", out, re.M), out
    assert re.search(r"^NDCG@10: EASE [\d.]+, most popular [\d.]+ \([\d.]+x\)$", out, re.M)
    assert re.search(r"^ease_max_items all \([\d,]+ movies\): NDCG@10 [\d.]+ \([+-][\d.]+ against "
                     r"300\)",
                     out, re.M), out


def test_bench_serve_loads_the_service_and_reports_latency(bench, tmp_path):
    out = bench("serve", "--n-ratings", "20000", "--seconds", "2", "--live-seconds", "1",
                "--workdir", str(tmp_path))
    assert re.search(r"^ready: answered [\d.]+ s after start; resident memory [\d,]+ MiB", out,
                     re.M), out
    for label in ("top 10 \\(the recommend stage's lists\\)", "top 50 \\(scored on request\\)"):
        assert re.search(rf"^{label}: [\d,]+ requests, \d+ requests/s, latency p50 [\d.]+ ms, "
                         r"p90 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms; 0 errors$", out, re.M), out
    assert re.search(r"^in this process, no HTTP, n=50 \(scored on request\): median", out, re.M)


def test_bench_pipeline_runs_every_stage_of_the_ranking_configuration(bench, tmp_path):
    out = bench("pipeline", "--n-ratings", "20000", "--set", "train.epochs=2",
                "--set", "patience=1", "--workdir", str(tmp_path))
    assert '"objective": "softmax"' in out and '"epochs": 2' in out
    for stage in ("ingest", "preprocess", "train", "recommend", "evaluate"):
        assert re.search(rf"^{stage}: [\d.]+ s, peak memory [\d,]+ MiB$", out, re.M)
    assert re.search(r"^whole pipeline, ingest to evaluate: \d+ s", out, re.M)
    for row in ("model", "ease", "popularity"):
        assert re.search(rf"^{row}: .*ndcg 0\.\d{{4}}", out, re.M)
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        bench("pipeline", "--set", "epochs", "--workdir", str(tmp_path))
