"""Small zips with each MovieLens release's exact layout, and a server for them on 127.0.0.1.

Nothing here is MovieLens data: ratings are generated, titles made up, only the file layouts,
separators, encodings and member names are the releases'.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.core.releases import releases

# Titles with a comma, quotes and non-ASCII letters that latin-1 can encode (as in ML-1M/100K).
TITLES = ["Toy Story (1995)", "Amélie (2001)", "City of Lost Children, The (1995)",
          'Rififi (Du rififi chez les hommes) (1955)', "Señorita Extraviada (2001)",
          "Fantômas (1913)", "Dead Man Walking (1995)", "Ça commence aujourd'hui (1999)"]
GENRES = ["Adventure|Animation|Children", "Comedy|Romance", "Drama|Mystery", "Crime|Film-Noir",
          "Documentary", "Crime|Drama", "Drama", "Drama"]
UITEM_FLAGS = ("unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")


def fixture_tables(whole_stars: bool, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """About 40 ratings by 6 users of 8 movies with sparse ids; sorted like MovieLens."""
    rng = np.random.default_rng(seed)
    movie_ids = np.array([1, 2, 29, 32, 47, 50, 1193, 131262])
    rows = []
    for user in range(1, 7):
        for movie in rng.choice(movie_ids, size=rng.integers(5, 9), replace=False):
            stars = rng.integers(1, 6) if whole_stars else rng.integers(1, 11) / 2
            rows.append((user, int(movie), float(stars), int(rng.integers(8e8, 1.4e9))))
    ratings = pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.sort_values(["userId", "movieId"], ignore_index=True)
    movies = pd.DataFrame({"movieId": movie_ids, "title": TITLES, "genres": GENRES})
    return ratings, movies


def ratings_text(ratings: pd.DataFrame, fmt: str) -> str:
    rows = ratings.itertuples(index=False)
    if fmt == "csv":
        body = [f"{u},{m},{r:.1f},{t}" for u, m, r, t in rows]
        return "userId,movieId,rating,timestamp\n" + "\n".join(body) + "\n"
    if fmt == "kaggle":
        body = [f"{u},{m},{r:.1f},{pd.Timestamp(t, unit='s'):%Y-%m-%d %H:%M:%S}"
                for u, m, r, t in rows]
        return '"userId","movieId","rating","timestamp"\n' + "\n".join(body) + "\n"
    if fmt == "dat":
        return "".join(f"{u}::{m}::{r:g}::{t}\n" for u, m, r, t in rows)
    if fmt == "udata":
        return "".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in rows)
    raise ValueError(fmt)


def movies_text(movies: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return movies.to_csv(index=False)
    if fmt == "dat":
        return "".join(f"{i}::{t}::{g}\n" for i, t, g in movies.itertuples(index=False))
    if fmt == "uitem":
        lines = []
        for i, t, g in movies.itertuples(index=False):
            flags = "|".join("1" if f in g.split("|") else "0" for f in UITEM_FLAGS)
            lines.append(f"{i}|{t}|01-Jan-1995||http://us.imdb.com/M/title-exact?x|{flags}")
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


def release_zip(name: str, ratings: pd.DataFrame, movies: pd.DataFrame) -> bytes:
    """A zip laid out exactly as release ``name`` (member names, separators, encodings)."""
    rel = releases()[name]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        folder = rel.ratings_member.split("/")[0]
        zf.writestr(f"{folder}/", "")
        zf.writestr(rel.ratings_member, ratings_text(ratings, rel.ratings_format))
        zf.writestr(rel.movies_member,
                    movies_text(movies, rel.movies_format).encode(rel.movies_encoding))
        if name == "ml-100k":  # the split files that must not be mistaken for the ratings
            zf.writestr(f"{folder}/u1.base", ratings_text(ratings.head(5), "udata"))
            zf.writestr(f"{folder}/README", "fixture\n")
    return buf.getvalue()


def kaggle_zip(ratings: pd.DataFrame, movies: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rating.csv", ratings_text(ratings, "kaggle"))
        zf.writestr("movie.csv", movies_text(movies, "csv"))
    return buf.getvalue()


@dataclass
class Served:
    """What the server answers for one path."""

    body: bytes
    mode: str = "ok"  # ok | truncate | error500 | error404
    requests: int = 0


@dataclass
class FixtureServer:
    """An HTTP server on 127.0.0.1 serving ``routes`` (path -> Served)."""

    routes: dict[str, Served] = field(default_factory=dict)

    def __enter__(self) -> FixtureServer:
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served = routes.get(self.path)
                if served is None:
                    self.send_error(404)
                    return
                served.requests += 1
                if served.mode in ("error500", "error404"):
                    self.send_error(int(served.mode[-3:]))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(served.body)))
                self.end_headers()
                body = served.body[: len(served.body) // 2] if served.mode == "truncate" \
                    else served.body
                self.wfile.write(body)
                self.wfile.flush()
                if served.mode == "truncate":
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve_release(self, name: str, body: bytes, ratings: pd.DataFrame,
                      mode: str = "ok") -> dict:
        """Serves ``body`` as release ``name``; returns its override entry."""
        path = f"/{name}.zip"
        self.routes[path] = Served(body, mode)
        return {"url": self.url(path), "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "ratings": len(ratings), "users": int(ratings["userId"].nunique())}


def write_overrides(path: Path, overrides: dict) -> Path:
    path.write_text(json.dumps(overrides))
    return path
