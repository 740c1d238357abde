"""``python -m benchmarks serve``: the recommendation service under load at MovieLens-20M scale.

In one run on one machine:

1. the real ingest, preprocess and train stages on the full-size twin (the scored model's
   epochs do not change the service's cost), and the recommend stage with
   ``recommend.candidates`` (``--candidates``, default 100: the exact top 10 for every user at
   ML-20M scale, docs/benchmarks.md) for the lists the service hands out;
2. ``python -m movierec serve`` started as a user starts it, in a folder whose dvc.yaml names
   those files: the seconds until it answers, and its memory;
3. a bounded load generator on 127.0.0.1: ``--clients`` threads, each with its own kept-alive
   connection, asking for random known users' top 10 for ``--seconds``: requests per second,
   latency percentiles, errors;
4. the same for a list longer than the stage's (``n=50``, scored on request), for
   ``--live-seconds``;
5. the breakdown: the same answers computed in this process without HTTP, and what loading
   spends its time on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from benchmarks.common import ML20M_RATINGS, Workspace, report, trained_model, work_folder

HELP = "the recommendation service under load at ML-20M scale"
READY_TIMEOUT_S = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    parser.add_argument("--candidates", type=int, default=100,
                        help="recommend.candidates for the stage's lists (0: exact)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="load for the top 10")
    parser.add_argument("--live-seconds", type=float, default=10.0,
                        help="load for n=50, scored on request")
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused if present)")


def run(args: argparse.Namespace) -> None:
    with work_folder(args.workdir) as work:
        bench_serve(work, args.n_ratings, args.candidates, args.clients, args.seconds,
                    args.live_seconds)


def served_project(space: Workspace, candidates: int) -> Path:
    """The workspace's files under the names dvc.yaml gives the service (``vars: paths``)."""
    top_n = space.out / f"top_n_c{candidates}.parquet"
    if not top_n.is_file():
        space.set_params("recommend", candidates=candidates)
        report(f"recommend (candidates {candidates})", space.recommend(top_n))
    paths = {name: str(path.relative_to(space.root))
             for name, path in space.served_paths().items()}
    paths.update(ratings=str((space.raw / "ratings.parquet").relative_to(space.root)),
                 top_n=str(top_n.relative_to(space.root)))
    (space.root / "dvc.yaml").write_text(yaml.safe_dump({"vars": [{"paths": paths}]}))
    return space.root


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM) of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def start_service(root: Path, port: int) -> tuple[subprocess.Popen, float]:
    """The service process and the seconds from its start to its first answer."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "movierec", "serve", "--root", str(root),
                             "--port", str(port), "--poll", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while time.perf_counter() - start < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited:\n{proc.stderr.read()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the service did not answer within {READY_TIMEOUT_S} s")


def load(port: int, users: list[int], n: int, clients: int, seconds: float) -> dict:
    """``clients`` threads asking for random users' top n for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            conn.request("GET", f"/users/{rng.choice(users)}/recommendations?n={n}")
            response = conn.getresponse()
            body = response.read()
            latencies[i].append(time.perf_counter() - t)
            if response.status != 200 or len(json.loads(body)["recommendations"]) != n:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    times = sorted(x for per in latencies for x in per)
    pct = {p: times[min(len(times) - 1, int(p / 100 * len(times)))] * 1e3
           for p in (50, 90, 99)}
    return {"requests": len(times), "rps": len(times) / elapsed, "errors": sum(errors),
            "p50": pct[50], "p90": pct[90], "p99": pct[99], "max": times[-1] * 1e3}


def load_line(label: str, fig: dict) -> str:
    return (f"{label}: {fig['requests']:,} requests, {fig['rps']:.0f} requests/s, latency p50 "
            f"{fig['p50']:.1f} ms, p90 {fig['p90']:.1f} ms, p99 {fig['p99']:.1f} ms, max "
            f"{fig['max']:.1f} ms; {fig['errors']} errors")


def in_process(root: Path, users: list[int], repeats: int = 200) -> list[str]:
    """Part 5: the service's own work without HTTP, and its loading steps."""
    from movierec.core.paths import pipeline_paths
    from movierec.serve.query import Recommender
    from movierec.serve.snapshot import Lists, Ratings, Snapshot

    paths = pipeline_paths(root)
    t0 = time.perf_counter()
    rec = Recommender.load(paths)
    t1 = time.perf_counter()
    Lists.read(paths["top_n"], rec.movie_ids)
    t2 = time.perf_counter()
    Ratings.read(paths["ratings"], rec)
    t3 = time.perf_counter()
    snap = Snapshot.load(root)
    rng = random.Random(0)
    lines = [f"loading: model, id tables and train split {t1 - t0:.1f} s, the stage's lists "
             f"{t2 - t1:.1f} s, ratings with their times {t3 - t2:.1f} s"]
    for n, what in ((10, "the stage's list"), (50, "scored on request")):
        times = []
        for _ in range(repeats):
            user = rng.choice(users)
            t = time.perf_counter()
            snap.recommendations(user, n)
            times.append(time.perf_counter() - t)
        lines.append(f"in this process, no HTTP, n={n} ({what}): median "
                     f"{statistics.median(times) * 1e3:.2f} ms")
    return lines


def bench_serve(work: Path, n_ratings: int, candidates: int, clients: int, seconds: float,
                live_seconds: float) -> None:
    """Runs the five parts in the module docstring's order, printing every figure."""
    import pandas as pd

    space = Workspace.create(work, n_ratings, epochs=1)
    trained_model(space, n_ratings, 1)
    root = served_project(space, candidates)
    users = pd.read_parquet(space.out / f"top_n_c{candidates}.parquet",
                            columns=["userId"])["userId"].unique().tolist()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"\n== python -m movierec serve on 127.0.0.1, {len(users):,} users with lists",
          flush=True)
    proc, ready_s = start_service(root, port)
    try:
        mem = memory_mib(proc.pid)
        print(f"ready: answered {ready_s:.1f} s after start; resident memory "
              f"{mem['VmRSS']:,.0f} MiB (peak {mem['VmHWM']:,.0f} MiB)", flush=True)
        print(f"\n== {clients} clients, random known users; {seconds:.0f} s for the top 10, "
              f"{live_seconds:.0f} s for the top 50", flush=True)
        print(load_line("top 10 (the recommend stage's lists)",
                        load(port, users, 10, clients, seconds)), flush=True)
        print(load_line("top 50 (scored on request)",
                        load(port, users, 50, clients, live_seconds)), flush=True)
        mem = memory_mib(proc.pid)
        print(f"service memory after the load: {mem['VmRSS']:,.0f} MiB resident "
              f"(peak {mem['VmHWM']:,.0f} MiB)", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("\n== breakdown", flush=True)
    print("\n".join(in_process(root, users)), flush=True)
