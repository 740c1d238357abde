"""Downloading a release zip: HTTPS, progress bar, retries, size and sha256 verified.

The bytes go to a temporary file beside the target and are renamed onto it only once complete
and verified, so a failed, truncated or interrupted (Ctrl-C) download leaves nothing behind and is
never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from movierec.core.errors import DataError
from movierec.core.files import atomic_path
from movierec.core.releases import Release

CHUNK = 1 << 20
TIMEOUT_S = 30.0  # per socket operation, not for the whole download
RETRIES = 3  # attempts after the first, for connection errors and 5xx answers only
BACKOFF_S = 2.0


class DownloadError(DataError):
    """The release could not be fetched or did not verify."""


def _offline_hint(release: Release) -> str:
    return (f"download {release.url} yourself and run with data.dataset=file "
            "data.path=<the zip>, or use data.dataset=synthetic (offline)")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, release: Release) -> None:
    """Checks size and sha256; deletes the file and raises if either differs."""
    size = path.stat().st_size
    if size != release.size:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{release.url}: received {size:,} bytes (expected {release.size:,}); "
                            "the file was deleted")
    digest = sha256_of(path)
    if digest != release.sha256:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{release.url}: sha256 {digest} (expected {release.sha256}); "
                            "the file was deleted")


def _fetch_once(release: Release, out: Path, progress: bool) -> None:
    request = urllib.request.Request(release.url, headers={"User-Agent": "movierec"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, out.open("wb") as fh:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else release.size
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                  desc=release.name, disable=not progress, mininterval=1.0) as bar:
            while block := response.read(CHUNK):
                fh.write(block)
                received += len(block)
                bar.update(len(block))
        if length and length.isdigit() and received != int(length):
            # urllib does not always raise when the server closes early.
            raise http.client.IncompleteRead(b"", int(length) - received)


def download(release: Release, target: str | Path, progress: bool = True) -> Path:
    """Downloads ``release`` to ``target`` (the zip), verified. Skips if already verified there."""
    target = Path(target)
    if target.is_file() and target.stat().st_size == release.size and (
            sha256_of(target) == release.sha256):
        return target
    attempt = 0
    while True:
        try:
            with atomic_path(target, suffix=".part") as part:
                _fetch_once(release, part, progress)
                verify(part, release)
            return target
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt >= RETRIES:
                raise DownloadError(f"{release.url}: HTTP {exc.code} {exc.reason}; "
                                    + _offline_hint(release)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError,
                http.client.HTTPException) as exc:
            if attempt >= RETRIES:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(f"{release.url}: cannot download ({reason}) after "
                                    f"{attempt + 1} attempts; " + _offline_hint(release)) from None
        attempt += 1
        time.sleep(BACKOFF_S * attempt)
