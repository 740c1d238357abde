"""``python -m benchmarks.speed ingest``: reading an ML-20M-sized release zip.

It writes the full-size twin as a zip with ML-20M's exact layout and reads it back with the
ingest stage's reader in a fresh process, printing the time and the peak memory next to the
size of the canonical table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

# Peak memory from VmHWM: unlike ru_maxrss, it starts afresh in the new process image (Linux
# carries ru_maxrss across exec, so a child would report its parent's peak).
_READ_ONE = """
import json, sys, time
from movierec.core.stage import peak_memory_mib
from movierec.data.readers import read_zip
def peak_kb():
    return peak_memory_mib() * 1024
before = peak_kb()
start = time.perf_counter()
ratings, movies, source = read_zip(sys.argv[1], "ml-20m/ratings.csv", "csv",
                                   "ml-20m/movies.csv", "csv")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": len(ratings),
                  "table_bytes": int(ratings.memory_usage(index=False).sum()),
                  "rss_before_kb": before,
                  "peak_rss_kb": peak_kb()}))
"""


def write_ml20m_shaped_zip(path: Path, n_ratings: int) -> None:
    """The synthetic twin written as ``ml-20m/ratings.csv`` + ``movies.csv`` in a zip."""
    from movierec.data import synthetic

    twin = synthetic.generate(n_ratings, seed=42)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("ml-20m/ratings.csv", "w", force_zip64=True) as fh:
            twin.ratings.to_csv(fh, index=False, float_format="%.1f")
        zf.writestr("ml-20m/movies.csv", twin.movies.to_csv(index=False))


def bench_ingest(n_ratings: int, archive: Path) -> dict:
    if not archive.is_file():
        start = time.perf_counter()
        write_ml20m_shaped_zip(archive, n_ratings)
        print(f"wrote {archive} ({archive.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    done = subprocess.run([sys.executable, "-c", _READ_ONE, str(archive)], check=True,
                          capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(archive) as zf:
        result["csv_bytes"] = zf.getinfo("ml-20m/ratings.csv").file_size
    result["zip_bytes"] = archive.stat().st_size
    return result


def report_ingest(r: dict) -> None:
    mb = 1024  # VmHWM is in KiB
    print(f"ingest: {r['rows']:,} ratings from a {r['zip_bytes'] / 1e6:.0f} MB zip "
          f"({r['csv_bytes'] / 1e6:.0f} MB of CSV) in {r['seconds']:.1f} s")
    print(f"memory: canonical table {r['table_bytes'] / 2**20:.0f} MiB; process peak "
          f"{r['peak_rss_kb'] / mb:.0f} MiB, of which {r['rss_before_kb'] / mb:.0f} MiB before "
          f"reading (interpreter and libraries)")
