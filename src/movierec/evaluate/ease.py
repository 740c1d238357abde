"""EASE, the strong baseline of the ranking section (Steck, "Embarrassingly Shallow Autoencoders
for Sparse Data", WWW 2019).

X is the binary user x movie matrix of the train split: every train rating is a 1 (implicit
feedback, as in the paper). EASE is an item-item weight matrix B with a zero diagonal that
minimises ||X - X B||^2 + lambda ||B||^2. Its closed form is

    P = (X^T X + lambda I)^-1,    B[i, j] = -P[i, j] / P[j, j],    B[j, j] = 0,

and a user's scores are x_u B, the sum of the rows of B of the movies the user rated.

B is dense, movies x movies, so the fit is restricted to the ``max_items`` most-rated movies
(EASE never recommends the others; their ratings still count as the user's history only if the
movie is kept). The Gram matrix holds exact counts in float32 (exact below 2^24), and the
inverse is computed in float32 too, in place: it halves the memory and time of float64, and the
lists it gives match float64's (tests/evaluate/test_ease.py).

lambda is chosen from a grid on a seeded hold-out of the train split, never on the test split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy.linalg import lapack

from movierec.data import sparse
from movierec.data.sparse import Seen
from movierec.ranking import metrics as ranking
from movierec.ranking.topn import top_n_of_scores

# Users scored at once: BLOCK_USERS x max_items float32 scores (20 MB at 10,000 movies).
BLOCK_USERS = 512


@njit(parallel=True, cache=True)
def _gram(item_indptr, item_users, user_indptr, user_items, out):
    """out[i, j] = the number of users who rated both i and j (each thread owns rows i)."""
    for i in prange(out.shape[0]):
        row = out[i]
        for p in range(item_indptr[i], item_indptr[i + 1]):
            u = item_users[p]
            for q in range(user_indptr[u], user_indptr[u + 1]):
                row[user_items[q]] += 1.0


@njit(parallel=True, cache=True)
def _user_scores(users, indptr, items, weights, out):
    """out[b] = the sum of the rows of ``weights`` of the items of users[b]."""
    for b in prange(len(users)):
        row = out[b]
        row[:] = 0.0
        u = users[b]
        for p in range(indptr[u], indptr[u + 1]):
            row += weights[items[p]]


def _row_of_each_entry(indptr: np.ndarray) -> np.ndarray:
    """The CSR row (user) of every stored entry, in storage order."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


@dataclass(frozen=True)
class Catalogue:
    """The movies EASE models: ``kept`` (ascending full-catalogue indices) and each user's
    kept movies as a CSR in kept positions (0..len(kept)-1)."""

    kept: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def build(cls, indptr: np.ndarray, indices: np.ndarray, n_items: int,
              max_items: int) -> Catalogue:
        """The ``max_items`` most-rated movies of the users' CSR ``(indptr, indices)`` (ties to
        the smaller index), and that CSR restricted to them."""
        counts = np.bincount(indices, minlength=n_items)
        rated = np.flatnonzero(counts)
        order = rated[np.argsort(-counts[rated], kind="stable")]
        kept = np.sort(order[:max_items])
        position = np.full(n_items, -1, np.int64)
        position[kept] = np.arange(len(kept))
        mapped = position[indices]
        users = _row_of_each_entry(indptr)
        keep = mapped >= 0
        k_indptr, k_indices = sparse.csr_by_user(users[keep], mapped[keep], len(indptr) - 1)
        return cls(kept, k_indptr, k_indices)

    @property
    def size(self) -> int:
        return len(self.kept)


def gram(catalogue: Catalogue) -> np.ndarray:
    """X^T X over the kept movies, float32 (exact counts)."""
    n = catalogue.size
    users = _row_of_each_entry(catalogue.indptr)
    item_indptr, item_users = sparse.csr_by_user(catalogue.indices, users, n)
    out = np.zeros((n, n), np.float32)
    _gram(item_indptr, item_users, catalogue.indptr, catalogue.indices, out)
    return out


def fit(gram_matrix: np.ndarray, lam: float) -> np.ndarray:
    """B for one lambda > 0, float32 and C-ordered, from X^T X (which is left unchanged).

    P is LAPACK's Cholesky inverse in single precision (spotrf, spotri), computed in place in
    one Fortran-ordered copy; P is symmetric, so that copy's transpose holds P's rows
    contiguously and becomes B without another copy.
    """
    if not lam > 0:
        raise ValueError(f"EASE: received lambda={lam!r} (expected a number > 0)")
    a = np.array(gram_matrix, dtype=np.float32, order="F")
    a[np.diag_indices_from(a)] += np.float32(lam)
    chol, info = lapack.spotrf(a, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        p, info = lapack.spotri(chol, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: X^T X + {lam:g} I is not positive definite in float32 (LAPACK "
                         f"info {info}); expected a larger evaluate.ease_lambda")
    _mirror_upper(p)
    weights = p.T  # C-ordered: row j is P[j, :]
    weights /= -np.diag(weights)[None, :]  # column j divided by -P[j, j]
    np.fill_diagonal(weights, 0.0)
    return weights


def _mirror_upper(p: np.ndarray, block: int = 1024) -> None:
    """Copies the upper triangle of the square ``p`` onto its lower one, a block of columns at
    a time (index arrays for the whole triangle would take more memory than ``p``)."""
    n = p.shape[0]
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        p[hi:, lo:hi] = p[lo:hi, hi:].T
        d = p[lo:hi, lo:hi]
        d[...] = np.triu(d) + np.triu(d, 1).T


def top_k(weights: np.ndarray, catalogue: Catalogue, users: np.ndarray, k: int) -> np.ndarray:
    """Each user's k best kept movies by x_u B, skipping their own, as full-catalogue indices
    (len(users), k), padded with ranking.PAD; ties go to the smaller index."""
    seen = Seen(catalogue.indptr, catalogue.indices.astype(np.int32),
                np.ones(catalogue.size, bool))
    out = np.full((len(users), k), ranking.PAD, np.int64)
    scores = np.empty((min(BLOCK_USERS, len(users)), catalogue.size), np.float32)
    for start in range(0, len(users), BLOCK_USERS):
        block = np.asarray(users[start:start + BLOCK_USERS], np.int64)
        part = scores[:len(block)]
        _user_scores(block, catalogue.indptr, catalogue.indices, weights, part)
        idx, _ = top_n_of_scores(part, block, seen, k)
        out[start:start + len(block)] = np.where(idx >= 0, catalogue.kept[np.maximum(idx, 0)],
                                                 ranking.PAD)
    return out


@dataclass
class Timings:
    """Where EASE's time goes (seconds), for the benchmark."""

    holdout: float = 0.0  # the grid: fits and rankings on the hold-out
    gram: float = 0.0
    fit: float = 0.0
    rank: float = 0.0

    def lap(self, part: str, since: float) -> float:
        now = time.perf_counter()
        setattr(self, part, getattr(self, part) + now - since)
        return now


@dataclass(frozen=True)
class Choice:
    """The lambda chosen and the hold-out NDCG@k of every lambda tried (grid order)."""

    lam: float
    holdout_ndcg: dict[float, float]
    holdout_users: int


def choose_lambda(indptr: np.ndarray, indices: np.ndarray, n_items: int, grid: tuple, k: int,
                  max_items: int, fraction: float, seed: int, max_users: int) -> Choice:
    """The lambda of ``grid`` with the best NDCG@k on a seeded hold-out of the train split:
    ``fraction`` of the train ratings, drawn at random, are held out; EASE is fitted on the rest
    and ranks, for up to ``max_users`` users (0 = all; a seeded sample), the full catalogue
    minus their remaining movies. A single lambda is returned as it is, with no hold-out."""
    if len(grid) == 1:
        return Choice(float(grid[0]), {}, 0)
    users = _row_of_each_entry(indptr)
    held = np.random.default_rng(seed).random(len(indices)) < fraction
    fit_indptr, fit_indices = sparse.csr_by_user(users[~held], indices[~held], len(indptr) - 1)
    out_indptr, out_indices = sparse.csr_by_user(users[held], indices[held], len(indptr) - 1)
    ranked = np.flatnonzero((np.diff(fit_indptr) > 0) & (np.diff(out_indptr) > 0))
    if max_users and max_users < len(ranked):
        ranked = np.sort(np.random.default_rng(seed).choice(ranked, max_users, replace=False))
    catalogue = Catalogue.build(fit_indptr, fit_indices, n_items, max_items)
    g = gram(catalogue)
    relevant = sparse.csr_take(out_indptr, out_indices, ranked)
    scores = {}
    for lam in grid:
        lists = top_k(fit(g, lam), catalogue, ranked, k)
        scores[float(lam)] = ranking.ranking_metrics(lists, *relevant, k)["ndcg"]
    best = max(scores, key=lambda lam: (scores[lam], -list(scores).index(lam)))
    return Choice(best, scores, len(ranked))


def ease_lists(indptr: np.ndarray, indices: np.ndarray, n_items: int, users: np.ndarray,
               k: int, grid: tuple, max_items: int, fraction: float, seed: int,
               max_users: int, timings: Timings | None = None) -> tuple[np.ndarray, dict]:
    """The ``ease`` row's top-k lists for ``users``, fitted on the whole train split with the
    lambda chosen on its hold-out, and what the report says about the fit."""
    t = Timings() if timings is None else timings
    now = time.perf_counter()
    choice = choose_lambda(indptr, indices, n_items, grid, k, max_items, fraction, seed,
                           max_users)
    now = t.lap("holdout", now)
    catalogue = Catalogue.build(indptr, indices, n_items, max_items)
    g = gram(catalogue)
    now = t.lap("gram", now)
    weights = fit(g, choice.lam)
    del g
    now = t.lap("fit", now)
    lists = top_k(weights, catalogue, users, k)
    t.lap("rank", now)
    fit_report = {"lambda": choice.lam, "movies": catalogue.size,
                  "movies_in_train": int(np.count_nonzero(np.bincount(indices,
                                                                      minlength=n_items))),
                  "holdout_users": choice.holdout_users,
                  "holdout_ndcg": {f"{lam:g}": v for lam, v in choice.holdout_ndcg.items()}}
    return lists, fit_report
