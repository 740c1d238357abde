"""Every MovieLens release layout, downloaded from a server on 127.0.0.1, verified and parsed."""

import hashlib
import io
import zipfile

import pandas as pd
import pytest
from support.movielens_fixtures import (
    FixtureServer,
    fixture_tables,
    kaggle_zip,
    movies_text,
    ratings_text,
    release_zip,
    write_overrides,
)

from movierec.core.errors import DataError
from movierec.core.releases import OVERRIDE_ENV, RELEASE_NAMES, release
from movierec.data import download as dl
from movierec.data.ingest import load_file, load_release
from movierec.data.readers import read_ratings_path, sniff_format

CANONICAL = ["userId", "movieId", "rating", "timestamp"]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)
    monkeypatch.setattr(dl, "TIMEOUT_S", 5.0)


@pytest.fixture
def server():
    with FixtureServer() as srv:
        yield srv


def serve(server, tmp_path, monkeypatch, name, body=None, mode="ok", whole=None, **changes):
    """Serves a fixture for ``name`` and points the release table at it."""
    whole = release(name).whole_stars if whole is None else whole
    ratings, movies = fixture_tables(whole_stars=whole)
    body = release_zip(name, ratings, movies) if body is None else body
    entry = server.serve_release(name, body, ratings, mode)
    entry.update(changes)
    monkeypatch.setenv(OVERRIDE_ENV, str(write_overrides(tmp_path / "releases.json",
                                                         {name: entry})))
    return ratings, movies


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_every_release_downloads_verifies_and_parses(server, tmp_path, monkeypatch, name):
    ratings, movies = serve(server, tmp_path, monkeypatch, name)
    target = tmp_path / "dl" / f"{name}.zip"
    dl.download(release(name), target, progress=False)
    assert leftovers(tmp_path / "dl") == [f"{name}.zip"]

    got, got_movies, note = load_release(name, target)
    pd.testing.assert_frame_equal(got, ratings.astype(got.dtypes.to_dict()))
    assert list(got.columns) == CANONICAL
    assert "as published by GroupLens" in note
    titles = dict(zip(got_movies.movieId, got_movies.title, strict=True))
    assert titles == dict(zip(movies.movieId, movies.title, strict=True))  # latin-1 decoded
    genres = dict(zip(got_movies.movieId, got_movies.genres, strict=True))
    assert genres[1] == "Adventure|Animation|Children"


def test_verified_zip_is_not_downloaded_again(server, tmp_path, monkeypatch):
    serve(server, tmp_path, monkeypatch, "ml-100k")
    target = tmp_path / "ml-100k.zip"
    dl.download(release("ml-100k"), target, progress=False)
    dl.download(release("ml-100k"), target, progress=False)
    assert server.routes["/ml-100k.zip"].requests == 1


def test_checksum_mismatch_deletes_and_names_both_hashes(server, tmp_path, monkeypatch):
    ratings, movies = fixture_tables(whole_stars=False)
    good = release_zip("ml-20m", ratings, movies)
    tampered = good[:-1] + bytes([good[-1] ^ 0xFF])  # same size, other bytes
    serve(server, tmp_path, monkeypatch, "ml-20m", body=tampered,
          sha256=hashlib.sha256(good).hexdigest())
    with pytest.raises(dl.DownloadError) as info:
        dl.download(release("ml-20m"), tmp_path / "dl" / "ml-20m.zip", progress=False)
    message = str(info.value)
    assert hashlib.sha256(good).hexdigest() in message
    assert hashlib.sha256(tampered).hexdigest() in message
    assert "deleted" in message
    assert leftovers(tmp_path / "dl") == []


def test_size_mismatch_is_refused(server, tmp_path, monkeypatch):
    serve(server, tmp_path, monkeypatch, "ml-1m")
    entry_size = release("ml-1m").size
    monkeypatch.setenv(OVERRIDE_ENV, str(write_overrides(tmp_path / "r2.json", {"ml-1m": {
        "url": server.url("/ml-1m.zip"), "size": entry_size + 10,
        "sha256": release("ml-1m").sha256}})))
    with pytest.raises(dl.DownloadError, match=rf"received {entry_size:,} bytes \(expected"):
        dl.download(release("ml-1m"), tmp_path / "dl" / "ml-1m.zip", progress=False)
    assert leftovers(tmp_path / "dl") == []


def test_truncated_download_is_retried_then_refused(server, tmp_path, monkeypatch):
    serve(server, tmp_path, monkeypatch, "ml-10m", mode="truncate")
    with pytest.raises(dl.DownloadError, match="cannot download"):
        dl.download(release("ml-10m"), tmp_path / "dl" / "ml-10m.zip", progress=False)
    assert server.routes["/ml-10m.zip"].requests == dl.RETRIES + 1
    assert leftovers(tmp_path / "dl") == []


def test_server_errors(server, tmp_path, monkeypatch):
    serve(server, tmp_path, monkeypatch, "ml-25m", mode="error500")
    with pytest.raises(dl.DownloadError, match="HTTP 500"):
        dl.download(release("ml-25m"), tmp_path / "dl" / "ml-25m.zip", progress=False)
    assert server.routes["/ml-25m.zip"].requests == dl.RETRIES + 1  # 5xx: retried

    serve(server, tmp_path, monkeypatch, "ml-32m", mode="error404")
    with pytest.raises(dl.DownloadError) as info:
        dl.download(release("ml-32m"), tmp_path / "dl" / "ml-32m.zip", progress=False)
    assert server.routes["/ml-32m.zip"].requests == 1  # 404: not retried
    message = str(info.value)
    assert "HTTP 404" in message and "data.dataset=file" in message
    assert "data.dataset=synthetic" in message and release("ml-32m").url in message
    assert leftovers(tmp_path / "dl") == []


def test_unreachable_host_names_the_url_and_the_way_out(server, tmp_path, monkeypatch):
    # A port on 127.0.0.1 that nothing listens on: connection refused, as offline.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(server, tmp_path, monkeypatch, "ml-100k", url=f"http://127.0.0.1:{port}/ml-100k.zip")
    with pytest.raises(dl.DownloadError) as info:
        dl.download(release("ml-100k"), tmp_path / "dl" / "ml-100k.zip", progress=False)
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/ml-100k.zip" in message
    assert "download" in message and "yourself" in message and "\n" not in message
    assert leftovers(tmp_path / "dl") == []


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    serve(server, tmp_path, monkeypatch, "ml-latest-small")
    monkeypatch.setattr(dl, "CHUNK", 64)
    calls = {"n": 0}
    real_update = dl.tqdm.update

    def interrupt(self, n=1):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_update(self, n)

    monkeypatch.setattr(dl.tqdm, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        dl.download(release("ml-latest-small"), tmp_path / "dl" / "x.zip", progress=False)
    assert leftovers(tmp_path / "dl") == []


def test_corrupt_zips_are_reported(tmp_path):
    ratings, movies = fixture_tables(whole_stars=False)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    with pytest.raises(DataError, match="not a readable zip"):
        read_ratings_path(garbage)

    body = bytearray(release_zip("ml-20m", ratings, movies))
    start = body.index(b"ml-20m/ratings.csv") + len("ml-20m/ratings.csv")
    body[start + 5: start + 25] = bytes(20)  # damage the compressed ratings
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(body))
    with pytest.raises(DataError, match=r"damaged\.zip"):
        read_ratings_path(damaged)


def test_member_escaping_the_folder_is_refused(tmp_path):
    ratings, _ = fixture_tables(whole_stars=False)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ml-20m/ratings.csv", ratings_text(ratings, "csv"))
        zf.writestr("../../etc/cron.d/evil", "boom")
    with pytest.raises(DataError, match="escapes the archive"):
        read_ratings_path(evil)


@pytest.mark.parametrize(
    ("filename", "fmt", "whole"),
    [("ratings.csv", "csv", False), ("rating.csv", "kaggle", False),
     ("ratings.dat", "dat", False), ("u.data", "udata", True), ("my_ratings.txt", "dat", True)],
)
def test_file_format_is_detected(tmp_path, filename, fmt, whole):
    ratings, _ = fixture_tables(whole_stars=whole)
    path = tmp_path / filename
    path.write_text(ratings_text(ratings, fmt))
    got, _, source = read_ratings_path(path)
    assert source.format == fmt
    # Kaggle's datetime strings are UTC: the same Unix seconds come back.
    pd.testing.assert_frame_equal(got, ratings.astype(got.dtypes.to_dict()))


def test_movies_file_beside_a_plain_ratings_file(tmp_path):
    ratings, movies = fixture_tables(whole_stars=True)
    (tmp_path / "u.data").write_text(ratings_text(ratings, "udata"))
    (tmp_path / "u.item").write_bytes(movies_text(movies, "uitem").encode("latin-1"))
    _, got_movies, _ = read_ratings_path(tmp_path / "u.data")
    assert "Amélie (2001)" in set(got_movies.title)


def test_kaggle_zip_and_release_zip_as_files(tmp_path, monkeypatch):
    ratings, movies = fixture_tables(whole_stars=False)
    kz = tmp_path / "movielens-20m-dataset.zip"
    kz.write_bytes(kaggle_zip(ratings, movies))
    got, got_movies, note = load_file(kz)
    assert "(kaggle)" in note
    assert got["timestamp"].tolist() == ratings["timestamp"].tolist()
    assert "Fantômas (1913)" in set(got_movies.title)

    # A release zip on disk is recognised by its sha256 and checked like a download.
    body = release_zip("ml-1m", *fixture_tables(whole_stars=True))
    rz = tmp_path / "ml-1m.zip"
    rz.write_bytes(body)
    whole, _ = fixture_tables(whole_stars=True)
    monkeypatch.setenv(OVERRIDE_ENV, str(write_overrides(tmp_path / "o.json", {"ml-1m": {
        "sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
        "ratings": len(whole), "users": 6}})))
    _, _, note = load_file(rz)
    assert "ml-1m:" in note and "as published" in note


def test_counts_and_scale_are_checked_against_the_release(server, tmp_path, monkeypatch):
    serve(server, tmp_path, monkeypatch, "ml-100k", ratings=999)
    dl.download(release("ml-100k"), tmp_path / "a.zip", progress=False)
    with pytest.raises(DataError, match=r"expected 999 from"):
        load_release("ml-100k", tmp_path / "a.zip")

    # Half stars in a whole-star release are not on its scale.
    ratings, movies = fixture_tables(whole_stars=False)
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", ratings_text(ratings, "dat"))
        zf.writestr("ml-1m/movies.dat", movies_text(movies, "dat").encode("latin-1"))
    (tmp_path / "b.zip").write_bytes(body.getvalue())
    with pytest.raises(DataError, match="expected whole stars 1 to 5 in ml-1m"):
        load_release("ml-1m", tmp_path / "b.zip")


@pytest.mark.parametrize(
    ("head", "fmt"),
    [(b"PK\x03\x04rest", "zip"), (b"1::2::3::4\n", "dat"), (b"1\t2\t3\t4\n", "udata"),
     (b"userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n", "csv"),
     (b'"userId","movieId","rating","timestamp"\n1,2,3.5,2005-04-02 23:53:47\n', "kaggle")],
)
def test_sniff_format(head, fmt):
    assert sniff_format(head, "x") == fmt


@pytest.mark.parametrize(("head", "fragment"), [
    (b"\x00\x01\x02binary", "binary data"), (b"", "empty file"),
    (b"name,age\nbob,3\n", "not a known ratings layout")])
def test_sniff_refuses_unknown_layouts(head, fragment):
    with pytest.raises(DataError, match=fragment):
        sniff_format(head, "x")
