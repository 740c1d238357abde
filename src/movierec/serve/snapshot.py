"""One consistent set of the pipeline's outputs in memory, as the service answers from it: the
model (``query.Recommender``), the recommend stage's lists, each user's train ratings with
their times, and the catalogue.

A user's top n is the recommend stage's own list when n is at most its length (the stage ran
on this model: ``lock.LockState.consistent``), so the service and the stage can never
disagree; a longer list is scored on the spot with the same kernel as the stage.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from movierec.core.columns import (
    MOVIE_COL,
    RATING_COL,
    RATING_MAX,
    RATING_MIN,
    TIMESTAMP_COL,
    USER_COL,
)
from movierec.core.files import read_parquet
from movierec.core.paths import pipeline_paths
from movierec.ranking.metrics import popularity_scores
from movierec.ranking.topn import RANK_COL, SCORE_COL
from movierec.serve.lock import LockState, read_lock
from movierec.serve.query import Item, Recommender

YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class ByUser:
    """Rows grouped by ascending user id: user ``ids[i]``'s rows are ``start[i]:start[i+1]``."""

    ids: np.ndarray
    start: np.ndarray

    @classmethod
    def of(cls, sorted_user_ids: np.ndarray) -> ByUser:
        ids, first = np.unique(sorted_user_ids, return_index=True)
        return cls(ids, np.append(first, len(sorted_user_ids)).astype(np.int64))

    def rows(self, user_id: int) -> slice:
        i = int(np.searchsorted(self.ids, user_id))
        if i == len(self.ids) or self.ids[i] != user_id:
            return slice(0, 0)
        return slice(int(self.start[i]), int(self.start[i + 1]))


@dataclass(frozen=True)
class Lists:
    """The recommend stage's top-n lists (movie positions and scores), by user."""

    by_user: ByUser
    movies: np.ndarray  # movie index of each row
    scores: np.ndarray
    length: int  # the stage's n

    @classmethod
    def read(cls, path: Path, movie_ids: np.ndarray) -> Lists:
        table = read_parquet(path).sort_values([USER_COL, RANK_COL], kind="stable")
        movies = np.searchsorted(movie_ids, table[MOVIE_COL].to_numpy())
        return cls(ByUser.of(table[USER_COL].to_numpy()), movies.astype(np.int64),
                   table[SCORE_COL].to_numpy(np.float64),
                   int(table[RANK_COL].max()) if len(table) else 0)


@dataclass(frozen=True)
class Ratings:
    """Every train rating with its time, grouped by user (each request sorts its user's few)."""

    by_user: ByUser
    movies: np.ndarray  # movie index
    stars: np.ndarray
    times: np.ndarray  # seconds since 1970

    @classmethod
    def read(cls, ratings_path: Path, rec: Recommender) -> Ratings:
        """The raw ratings that are in the train split (its pairs), with their timestamps."""
        raw = read_parquet(ratings_path, columns=[USER_COL, MOVIE_COL, RATING_COL,
                                                  TIMESTAMP_COL])
        raw_users = raw[USER_COL].to_numpy()
        users = np.minimum(np.searchsorted(rec.user_ids, raw_users), len(rec.user_ids) - 1)
        movies = np.minimum(np.searchsorted(rec.movie_ids, raw[MOVIE_COL].to_numpy()),
                            len(rec.movie_ids) - 1)
        # The train pairs as sorted keys (the CSR is by user, movies sorted within): a binary
        # search per raw rating says whether it is one of them.
        n_movies = np.int64(len(rec.movie_ids))
        seen = rec.seen
        train_key = np.repeat(np.arange(len(seen.indptr) - 1, dtype=np.int64),
                              np.diff(seen.indptr)) * n_movies + seen.movies
        key = users.astype(np.int64) * n_movies + movies
        at = np.minimum(np.searchsorted(train_key, key), max(len(train_key) - 1, 0))
        keep = (train_key[at] == key) if len(train_key) else np.zeros(len(key), bool)
        keep &= rec.user_ids[users] == raw_users
        order = np.flatnonzero(keep)
        if np.any(np.diff(raw_users[order]) < 0):  # MovieLens files come sorted by user
            order = order[np.argsort(raw_users[order], kind="stable")]
        return cls(ByUser.of(raw_users[order]), movies[order],
                   raw[RATING_COL].to_numpy(np.float64)[order],
                   raw[TIMESTAMP_COL].to_numpy(np.int64)[order])

    def of(self, user_id: int, movie_ids: np.ndarray, sort: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(movie indices, stars, times) of the user's ratings: newest first (``recent``) or
        highest first, then newest (``rating``); ties by movie id."""
        rows = self.by_user.rows(user_id)
        movies, stars, times = self.movies[rows], self.stars[rows], self.times[rows]
        keys = (movie_ids[movies], -times) + ((-stars,) if sort == "rating" else ())
        order = np.lexsort(keys)
        return movies[order], stars[order], times[order]


@dataclass(frozen=True)
class Info:
    """What /health reports about the loaded outputs."""

    model: str
    lock: LockState | None
    loaded_at: str
    load_seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        md5 = self.lock.md5 if self.lock else {}
        return {"status": "ok", "model": self.model, "model_md5": md5.get("model"),
                "lists_md5": md5.get("top_n"), "data": self.lock.data if self.lock else {},
                "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 2),
                **self.counts}


class Snapshot:
    """The outputs of one pipeline run, loaded together; answers every query of the service."""

    def __init__(self, rec: Recommender, lists: Lists | None, ratings: Ratings, info: Info):
        self.rec, self.lists, self.ratings, self.info = rec, lists, ratings, info
        self.years = np.array([_year(t) for t in rec.titles], dtype=object)
        self._lower_titles = np.char.lower(rec.titles.astype(str))
        self._counts = popularity_scores(rec.seen.movies, len(rec.movie_ids))  # train ratings

    @classmethod
    def load(cls, root: str | Path, lock: LockState | None = None) -> Snapshot:
        start = time.perf_counter()
        root = Path(root)
        paths = pipeline_paths(root)
        lock = lock if lock is not None else read_lock(root, paths)
        rec = Recommender.load(paths)
        # The stage's lists only when they were made from this model and data.
        use_lists = paths["top_n"].exists() and (lock is None or lock.consistent)
        lists = Lists.read(paths["top_n"], rec.movie_ids) if use_lists else None
        ratings = Ratings.read(paths["ratings"], rec)
        rec.recommend(int(rec.known_users[0]), 1)  # compiles the scoring kernels now
        model = f"{rec.variant} network, {rec.objective} objective"
        counts = {"users": len(rec.known_users), "movies": len(rec.known_movies),
                  "train_ratings": len(rec.seen.movies)}
        info = Info(model, lock, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    time.perf_counter() - start, counts)
        return cls(rec, lists, ratings, info)

    def movie(self, m: int) -> dict:
        return {"movieId": int(self.rec.movie_ids[m]), "title": str(self.rec.titles[m]),
                "genres": str(self.rec.genres[m]), "year": self.years[m]}

    def _entry(self, item: Item, value_name: str) -> dict:
        m = self.rec.movie_index(item.movie_id)
        return {"rank": item.rank, **self.movie(m), value_name: round(item.value, 4)}

    def recommendations(self, user_id: int, n: int) -> dict:
        """The user's top n (the recommend stage's list when it is long enough)."""
        self.rec.user_index(user_id)  # refuses an unknown user
        if self.lists is not None and n <= self.lists.length:
            rows = self.lists.by_user.rows(user_id)
            movies, scores = self.lists.movies[rows][:n], self.lists.scores[rows][:n]
            source = "recommend stage"
        else:
            items = self.rec.recommend(user_id, n)
            movies = np.array([self.rec.movie_index(i.movie_id) for i in items], np.int64)
            scores = np.array([i.score for i in items])
            source = "scored on request"
        out = []
        for rank, (m, s) in enumerate(zip(movies, scores, strict=True), start=1):
            entry = {"rank": rank, **self.movie(int(m)), "score": round(float(s), 4)}
            if self.rec.objective == "rating":
                entry["predicted_rating"] = round(float(np.clip(s, RATING_MIN, RATING_MAX)), 4)
            out.append(entry)
        return {"userId": user_id, "objective": self.rec.objective, "source": source,
                "recommendations": out}

    def history(self, user_id: int, n: int, sort: str) -> dict:
        """The user's train ratings: newest first, or highest first (then newest)."""
        self.rec.user_index(user_id)
        movies, stars, times = self.ratings.of(user_id, self.rec.movie_ids, sort)
        out = [{**self.movie(int(m)), "rating": float(r),
                "rated_at": dt.datetime.fromtimestamp(int(t), dt.UTC).isoformat()}
               for m, r, t in zip(movies[:n], stars[:n], times[:n], strict=True)]
        return {"userId": user_id, "sort": sort, "total": len(movies), "ratings": out}

    def similar(self, movie_id: int, n: int) -> dict:
        items = self.rec.similar(movie_id, n)
        return {"movie": self.movie(self.rec.movie_index(movie_id)),
                "similar": [self._entry(i, "similarity") for i in items]}

    def search(self, text: str, n: int) -> dict:
        """Movies with a train rating whose title contains ``text`` (any case), most rated
        first."""
        hits = np.flatnonzero((np.char.find(self._lower_titles, text.lower()) >= 0)
                              & self.rec.seen.in_train)
        counts = self._counts
        hits = hits[np.lexsort((hits, -counts[hits]))][:n]
        return {"search": text, "movies": [{**self.movie(int(m)),
                                            "train_ratings": int(counts[m])} for m in hits]}


def _year(title: str) -> int | None:
    found = YEAR.search(title)
    return int(found.group(1)) if found else None
