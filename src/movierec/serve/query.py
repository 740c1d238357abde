"""One user's recommendations and one movie's neighbours, from the pipeline's outputs.

Loading does the recommend stage's precomputation once (``movierec.nets.scoring``); each answer
then scores one user against every movie with the recommend stage's kernel (fast enough to
answer at the prompt at MovieLens-20M size; docs/benchmarks.md has the latency) or compares one
movie embedding with all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.core.columns import (
    GENRES_COL,
    MOVIE_COL,
    RATING_MAX,
    RATING_MIN,
    TITLE_COL,
    USER_COL,
)
from movierec.core.errors import MovieRecError
from movierec.core.files import read_parquet
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.nets.saved import read_weights
from movierec.ranking.metrics import popularity_scores
from movierec.ranking.topn import recommend_block


class UnknownIdError(MovieRecError, LookupError):
    """A user or movie id that the trained model does not know."""


@dataclass(frozen=True)
class Item:
    rank: int
    movie_id: int
    title: str
    genres: str
    value: float  # predicted rating (clipped to the star scale), ranking score or similarity
    score: float  # the raw model output or the similarity itself

    def as_dict(self, value_name: str) -> dict:
        out = {"rank": self.rank, "movieId": self.movie_id, "title": self.title,
               "genres": self.genres, value_name: round(self.value, 4)}
        if value_name == "predicted_rating":
            out["score"] = round(self.score, 4)
        return out


def _describe(ids: np.ndarray, what: str) -> str:
    return (f"the train split knows {len(ids):,} {what}s, ids {int(ids.min())} to "
            f"{int(ids.max())}" if len(ids) else f"the train split knows no {what}s")


class Recommender:
    """The trained model and the data it was trained on, ready to answer queries."""

    def __init__(self, weights: scoring.ScoringWeights, user_ids: np.ndarray,
                 movies: pd.DataFrame, seen: Seen, objective: str = "rating",
                 variant: str = "residual"):
        self.weights = weights
        self.objective = objective  # rating: predicts stars; bce, bpr: a ranking score
        self.variant = variant  # residual, mf or deep
        self.user_ids = user_ids  # by user index, ascending
        self.movie_ids = movies[MOVIE_COL].to_numpy()  # by movie index, ascending
        self.titles = movies[TITLE_COL].fillna("").astype(str).to_numpy()
        self.genres = movies[GENRES_COL].fillna("").astype(str).to_numpy()
        self.seen = seen
        self.known_users = user_ids[np.diff(seen.indptr) > 0]
        self.known_movies = self.movie_ids[seen.in_train]
        self._unit: np.ndarray | None = None

    @classmethod
    def load(cls, paths: dict[str, Path]) -> Recommender:
        for name in ("model", "train", "user_index", "movie_index"):
            if not paths[name].exists():
                raise MovieRecError(f"{paths[name]} not found (expected the pipeline's outputs: "
                                    "run `dvc repro` or `dvc pull` first)")
        spec, named = read_weights(paths["model"])
        weights = scoring.from_weights(spec, named)
        users = read_parquet(paths["user_index"], columns=[USER_COL])[USER_COL].to_numpy()
        movies = read_parquet(paths["movie_index"])
        seen = Seen.read(paths["train"], weights.n_users, weights.n_movies)
        return cls(weights, users, movies, seen, spec.objective, spec.variant)

    def user_index(self, user_id: int) -> int:
        i = int(np.searchsorted(self.user_ids, user_id))
        if i == len(self.user_ids) or self.user_ids[i] != user_id or len(self.seen.of(i)) == 0:
            raise UnknownIdError(f"unknown user {user_id} ({_describe(self.known_users, 'user')})")
        return i

    def movie_index(self, movie_id: int) -> int:
        i = int(np.searchsorted(self.movie_ids, movie_id))
        if i == len(self.movie_ids) or self.movie_ids[i] != movie_id or not self.seen.in_train[i]:
            raise UnknownIdError(f"unknown movie {movie_id} "
                                 f"({_describe(self.known_movies, 'movie')})")
        return i

    def _items(self, idx: np.ndarray, values: np.ndarray, scores: np.ndarray) -> list[Item]:
        return [Item(rank=r + 1, movie_id=int(self.movie_ids[m]), title=self.titles[m],
                     genres=self.genres[m], value=float(v), score=float(s))
                for r, (m, v, s) in enumerate(zip(idx, values, scores, strict=True)) if m >= 0]

    def recommend(self, user_id: int, n: int) -> list[Item]:
        """The user's top n movies among those they have not rated in the train split."""
        user = self.user_index(user_id)
        idx, val = recommend_block(self.weights, np.array([user]), self.seen, n)
        if self.objective != "rating":  # a ranking score has no star scale to clip to
            return self._items(idx[0], val[0], val[0])
        return self._items(idx[0], np.clip(val[0], RATING_MIN, RATING_MAX), val[0])

    def popular(self, n: int) -> list[Item]:
        """The n movies with the most train ratings (ties by movie id)."""
        counts = popularity_scores(self.seen.movies, self.weights.n_movies)
        top = np.lexsort((np.arange(len(counts)), -counts))[:n]
        top = top[counts[top] > 0]
        return self._items(top, counts[top], counts[top])

    def similar(self, movie_id: int, n: int) -> list[Item]:
        """The n movies whose embeddings are nearest to the movie's by cosine similarity."""
        movie = self.movie_index(movie_id)
        if self._unit is None:
            emb = self.weights.movie_emb.astype(np.float64)
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            self._unit = emb / np.where(norms > 0, norms, 1.0)
        sims = self._unit @ self._unit[movie]
        sims[~self.seen.in_train] = -np.inf
        sims[movie] = -np.inf
        order = np.lexsort((np.arange(len(sims)), -sims))[:n]
        order = order[np.isfinite(sims[order])]
        return self._items(order, sims[order], sims[order])
