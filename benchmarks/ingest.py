"""``python -m benchmarks ingest``: reading an ML-20M-sized release zip.

It writes the full-size twin as a zip with ML-20M's exact layout and reads it back with the
ingest stage's reader in a fresh process, printing the time and the peak memory next to the
size of the canonical table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

from benchmarks.common import ML20M_RATINGS, peak_mib, print_json, run_child

HELP = "read an ML-20M-sized release zip"
RATINGS_CSV, MOVIES_CSV = "ml-20m/ratings.csv", "ml-20m/movies.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-ratings", type=int, default=ML20M_RATINGS)
    parser.add_argument("--zip", type=Path,
                        help="keep the generated zip here (reused if present)")


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report_ingest(bench_ingest(args.n_ratings, args.zip or Path(tmp) / "ml-20m-shaped.zip"))


def write_ml20m_shaped_zip(path: Path, n_ratings: int) -> None:
    """The synthetic twin written as ``ml-20m/ratings.csv`` + ``movies.csv`` in a zip."""
    from movierec.data import synthetic

    twin = synthetic.generate(n_ratings, seed=42)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(RATINGS_CSV, "w", force_zip64=True) as fh:
            twin.ratings.to_csv(fh, index=False, float_format="%.1f")
        zf.writestr(MOVIES_CSV, twin.movies.to_csv(index=False))


def child_read_zip(archive: str) -> None:
    """Reads ``archive`` with the ingest stage's reader (prints JSON: time, rows, memory).

    The peak comes from VmHWM: unlike ru_maxrss, it starts afresh in the new process image
    (Linux carries ru_maxrss across exec, so a child would report its parent's peak).
    """
    from movierec.data.readers import read_zip

    before = peak_mib()
    start = time.perf_counter()
    ratings, _, _ = read_zip(archive, RATINGS_CSV, "csv", MOVIES_CSV, "csv")
    seconds = time.perf_counter() - start
    print_json({"seconds": seconds, "rows": len(ratings),
                "table_bytes": int(ratings.memory_usage(index=False).sum()),
                "peak_before_mib": before, "peak_mib": peak_mib()})


def bench_ingest(n_ratings: int, archive: Path) -> dict:
    """The read's figures, with the sizes of the zip and of its ratings CSV."""
    if not archive.is_file():
        start = time.perf_counter()
        write_ml20m_shaped_zip(archive, n_ratings)
        print(f"wrote {archive} ({archive.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    result = run_child(__name__, "child_read_zip", archive)
    with zipfile.ZipFile(archive) as zf:
        result["csv_bytes"] = zf.getinfo(RATINGS_CSV).file_size
    result["zip_bytes"] = archive.stat().st_size
    return result


def report_ingest(r: dict) -> None:
    print(f"ingest: {r['rows']:,} ratings from a {r['zip_bytes'] / 1e6:.0f} MB zip "
          f"({r['csv_bytes'] / 1e6:.0f} MB of CSV) in {r['seconds']:.1f} s")
    print(f"memory: canonical table {r['table_bytes'] / 2**20:.0f} MiB; process peak "
          f"{r['peak_mib']:.0f} MiB, of which {r['peak_before_mib']:.0f} MiB before "
          f"reading (interpreter and libraries)")
