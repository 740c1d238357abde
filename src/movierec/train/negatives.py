"""Negative sampling: movies a user did not rate, drawn to contrast with the ones they did.

A ranking objective learns from pairs: a movie the user rated (a positive) against movies the
user did not rate (negatives). Enumerating every unrated movie is out of the question at
MovieLens-20M scale (138k users x 27k movies), so negatives are sampled afresh every epoch:

* ``uniform``: every movie of the catalogue (the movies with at least one rating in the fit data,
  the only ones the model can learn and recommend) equally likely;
* ``popularity``: a movie with ``c`` ratings drawn in proportion to ``c ** 0.75`` (word2vec's
  smoothed unigram distribution): popular movies, the hard negatives a most-popular list would
  put first, come up more often, but not as often as their raw counts.

The sampler is exact, not approximate: a draw that lands on one of the user's own rated movies
is redrawn (rejection sampling), so a positive is never handed out as a negative, and the
accepted draws follow the chosen distribution restricted to the user's unrated movies. The
redraws are counted (``SampleStats``) so that their cost is visible. Everything is vectorised:
one batch of draws for all positives, then batches of redraws for the few that collided; the
membership test is a binary search in the user's sorted movies (numba). All randomness comes from
the ``numpy.random.Generator`` the caller passes, so the same generator state gives the same
negatives (training checkpoints that state, and a resumed run draws what the killed one would
have).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from movierec.core.config import NEGATIVE_SAMPLING
from movierec.core.errors import DataError
from movierec.data.sparse import csr_by_user

POPULARITY_POWER = 0.75
# A user who rated all but a sliver of the sampling mass makes rejection slow; past this many
# rounds something is wrong (e.g. a user who rated the whole catalogue slipped through).
MAX_ROUNDS = 100_000


@njit(parallel=True, cache=True)
def _rated(indptr, movies, users, draws, out):
    """out[i] = draws[i] is among the sorted movies of users[i] (binary search)."""
    for i in prange(len(users)):
        lo, hi = indptr[users[i]], indptr[users[i] + 1]
        m = draws[i]
        while lo < hi:
            mid = (lo + hi) // 2
            if movies[mid] < m:
                lo = mid + 1
            else:
                hi = mid
        out[i] = lo < indptr[users[i] + 1] and movies[lo] == m


@dataclass
class SampleStats:
    """What sampling cost: draws made, how many hit a positive and were redrawn, rounds."""

    drawn: int = 0
    rejected: int = 0
    rounds: int = 0

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.drawn if self.drawn else 0.0


class NegativeSampler:
    """Draws negatives for users from the (user, movie) pairs they rated."""

    def __init__(self, users: np.ndarray, movies: np.ndarray, n_users: int, n_movies: int,
                 how: str = "uniform"):
        if how not in NEGATIVE_SAMPLING:
            raise ValueError(f"NegativeSampler: received how={how!r} (expected one of "
                             f"{', '.join(NEGATIVE_SAMPLING)})")
        self.how = how
        self.indptr, indices = csr_by_user(users, movies, n_users)
        self.movies = indices.astype(np.int32)
        counts = np.bincount(self.movies, minlength=n_movies)
        self.catalogue = np.flatnonzero(counts).astype(np.int32)
        weights = (np.ones(len(self.catalogue)) if how == "uniform"
                   else counts[self.catalogue].astype(np.float64) ** POPULARITY_POWER)
        self.probability = weights / weights.sum()  # per catalogue movie
        self._cdf = np.cumsum(self.probability)
        # A user who rated every catalogue movie has no negative at all.
        full = np.flatnonzero(np.diff(self.indptr) >= len(self.catalogue))
        if len(full):
            raise DataError(f"train: user index {int(full[0])} rated all {len(self.catalogue)} "
                            "movies of the catalogue (expected every user to leave at least one "
                            "unrated movie to sample as a negative)")
        self.stats = SampleStats()

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.how == "uniform":
            return self.catalogue[rng.integers(0, len(self.catalogue), n)]
        pick = np.searchsorted(self._cdf, rng.random(n) * self._cdf[-1], side="right")
        return self.catalogue[np.minimum(pick, len(self.catalogue) - 1)]

    def rated(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        """Whether each (user, movie) pair is one of the rated pairs (bool array)."""
        out = np.empty(len(users), bool)
        _rated(self.indptr, self.movies, np.asarray(users, np.int64),
               np.asarray(movies, np.int32), out)
        return out

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative movie (int32) per entry of ``users``, never one the user rated."""
        users = np.asarray(users, np.int64)
        draws = self._draw(len(users), rng)
        todo = np.flatnonzero(self.rated(users, draws))
        self.stats.drawn += len(users)
        rounds = 0
        while len(todo):
            rounds += 1
            if rounds > MAX_ROUNDS:
                raise DataError(f"train: {len(todo)} negatives still collide with rated movies "
                                f"after {MAX_ROUNDS} redraws (expected users with unrated movies "
                                "of non-zero sampling probability)")
            self.stats.rejected += len(todo)
            self.stats.drawn += len(todo)
            draws[todo] = self._draw(len(todo), rng)
            todo = todo[self.rated(users[todo], draws[todo])]
        self.stats.rounds = max(self.stats.rounds, rounds)
        return draws
