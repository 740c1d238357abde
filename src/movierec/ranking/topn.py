"""Top-n lists for every user: exact scores in blocks of users, a partial sort, bounded memory.

For each block of users the scores of every movie are computed (``movierec.nets.scoring``), the
user's own train movies and the movies without a train rating are skipped, and the n best are
kept. Ties are broken by the smaller movie index, which is the smaller MovieLens movieId
(preprocess indexes ids in ascending order), so the same model always gives the same lists.

With ``candidates`` = c > 0, each user's c best movies by the dot-product branch alone
(u.m + b_u + b_m) are retrieved first and only those are scored through the whole network:
much less work, and the same lists whenever the exact top n lies within those c.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit, prange

from movierec.core.columns import MOVIE_COL, USER_COL
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.nets.scoring import ScoringError, ScoringWeights

RANK_COL = "rank"
SCORE_COL = "score"
TOP_N_COLUMNS = (USER_COL, RANK_COL, MOVIE_COL, SCORE_COL)
# Users scored per block: 128 x 27k movies x 4 bytes = 14 MB of scores, whatever the data size.
BLOCK_USERS = 128


@njit(parallel=True, cache=True)
def _top_n(scores, users, indptr, seen, candidate, n, out_idx, out_val):
    """Per row b: the n highest scores[b, m] over candidate movies m not seen by users[b].

    A single pass keeps a sorted list of the best n; a movie enters only with a strictly
    higher score than the list's last, so among equal scores the smaller index, met first,
    stays (deterministic ties). Unfilled slots keep index -1.
    """
    n_m = scores.shape[1]
    for b in prange(scores.shape[0]):
        lo, hi = indptr[users[b]], indptr[users[b] + 1]
        k = 0  # filled slots
        p = lo  # next seen movie of this user (sorted)
        for m in range(n_m):
            while p < hi and seen[p] < m:
                p += 1
            if (p < hi and seen[p] == m) or not candidate[m]:
                continue
            s = scores[b, m]
            if k == n and s <= out_val[b, n - 1]:
                continue
            j = k if k < n else n - 1
            while j > 0 and out_val[b, j - 1] < s:  # shift lower scores down one slot
                out_val[b, j] = out_val[b, j - 1]
                out_idx[b, j] = out_idx[b, j - 1]
                j -= 1
            out_val[b, j] = s
            out_idx[b, j] = m
            if k < n:
                k += 1


def top_n_of_scores(scores: np.ndarray, users: np.ndarray, seen: Seen, n: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The top n (movie indices, scores) per row of ``scores``, skipping each user's seen
    movies and non-candidates; -1 / NaN where fewer than n remain."""
    if not np.isfinite(scores).all():
        raise ScoringError("recommend: the model gives NaN or infinite scores (expected finite "
                         "predictions; did training diverge?)")
    idx = np.full((len(users), n), -1, np.int32)
    val = np.full((len(users), n), np.nan, np.float32)
    _top_n(np.ascontiguousarray(scores, dtype=np.float32), np.asarray(users, np.int64),
           seen.indptr, seen.movies, seen.in_train, n, idx, val)
    return idx, val


def _rerank(movies: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorts each row by score (descending), ties by movie index; empty slots (-1) last."""
    key = np.where(movies >= 0, -scores.astype(np.float64), np.inf)
    order = np.lexsort((movies, key), axis=-1)[:, :n]
    top = np.take_along_axis(movies, order, axis=1)
    val = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    return top, np.where(top >= 0, val, np.nan).astype(np.float32)


@dataclass
class Timings:
    """Where the time went (seconds), for the stage log and the benchmark."""

    score: float = 0.0
    select: float = 0.0
    retrieve: float = 0.0
    blocks: int = 0


def recommend_block(weights: ScoringWeights, users: np.ndarray, seen: Seen, n: int,
                    candidates: int = 0, timings: Timings | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top-n (movie indices, scores) for a block of users, exact or via ``candidates``."""
    timings = timings if timings is not None else Timings()
    t0 = time.perf_counter()
    if candidates:
        pool, _ = top_n_of_scores(weights.main_scores(users), users, seen, candidates)
        t1 = time.perf_counter()
        scores = scoring.score_pairs(weights, users, pool)
        t2 = time.perf_counter()
        idx, val = _rerank(pool, scores, n)
        timings.retrieve += t1 - t0
        timings.score += t2 - t1
        timings.select += time.perf_counter() - t2
        return idx, val
    scores = scoring.score_block(weights, users)
    t1 = time.perf_counter()
    idx, val = top_n_of_scores(scores, users, seen, n)
    timings.score += t1 - t0
    timings.select += time.perf_counter() - t1
    return idx, val


def recommend_all(weights: ScoringWeights, users: np.ndarray, seen: Seen, n: int,
                  candidates: int = 0, block_users: int = BLOCK_USERS,
                  progress: Callable[[int, int], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, Timings]:
    """Top-n (movie indices (U, n), scores (U, n)) for ``users``, block by block."""
    users = np.asarray(users, dtype=np.int64)
    idx = np.full((len(users), n), -1, np.int32)
    val = np.full((len(users), n), np.nan, np.float32)
    timings = Timings()
    for start in range(0, len(users), block_users):
        block = users[start: start + block_users]
        idx[start: start + len(block)], val[start: start + len(block)] = recommend_block(
            weights, block, seen, n, candidates, timings)
        timings.blocks += 1
        if progress is not None:
            progress(start + len(block), len(users))
    return idx, val, timings


def top_n_table(users: np.ndarray, idx: np.ndarray, val: np.ndarray, user_ids: np.ndarray,
                movie_ids: np.ndarray) -> pd.DataFrame:
    """The lists as a long table in MovieLens ids: userId, rank (1..n), movieId, score.

    ``user_ids[i]`` / ``movie_ids[j]`` are the MovieLens ids of user index i / movie index j.
    Empty slots (fewer candidates than n) are dropped.
    """
    n = idx.shape[1]
    filled = idx >= 0
    rows, cols = np.nonzero(filled)  # row-major: by user, then rank
    return pd.DataFrame({
        USER_COL: np.asarray(user_ids)[np.asarray(users)[rows]].astype(np.int32),
        RANK_COL: (cols + 1).astype(np.int16 if n < 2**15 else np.int32),
        MOVIE_COL: np.asarray(movie_ids)[idx[rows, cols]].astype(np.int32),
        SCORE_COL: val[rows, cols].astype(np.float32),
    })
