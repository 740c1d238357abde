"""Full-catalogue top-k ranking metrics, and top-k lists for global-order baselines.

Protocol (the one of Microsoft Recommenders' MovieLens benchmark, `recommenders` package,
``python_evaluation.py``): for each user the candidates are every movie of the train split except
the user's own train movies; the relevant movies are the user's test movies (all of them, or with
a relevance threshold > 0 only those rated >= threshold). Every candidate is ranked: there are no
sampled negatives, because metrics over a sample of negatives can order models differently from
the full-catalogue ones (Krichene & Rendle, "On Sampled Metrics for Item Recommendation",
KDD 2020).

Definitions, for one user with ``n_rel`` relevant movies, a list of k recommendations and a hit
at 1-based position p when the movie there is relevant:

- precision@k = hits / k, also when the user has fewer than k candidates (a shorter list);
- recall@k = hits / n_rel;
- NDCG@k, binary gain: DCG = sum over hits of 1 / log2(p + 1), divided by the ideal DCG, the same
  sum over the first min(n_rel, k) positions;
- ``map`` (Microsoft Recommenders' "MAP"): sum over hits of (hits up to and including p) / p,
  divided by n_rel;
- ``map_at_k``: the same sum divided by min(n_rel, k).

Each metric is the mean over the users with at least one relevant movie; the others are left out
and counted. Relevant movies missing from the train split can never be recommended but still
count in n_rel.

Every function works on contiguous integer indices (users 0..n_users-1, movies 0..n_movies-1)
and is vectorised: a user's movies are stored as one CSR pair ``(indptr, indices)``, the movies
of user u being ``indices[indptr[u]:indptr[u + 1]]``, sorted and without duplicates.
"""

from __future__ import annotations

import numpy as np

from movierec.data.sparse import check_csr, check_rows, gather_rows, int_array

PAD = -1  # fills a top-k list when a user has fewer than k candidates


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"received k={k!r} (expected an integer >= 1)")


def popularity_scores(train_items: np.ndarray, n_items: int) -> np.ndarray:
    """Number of train ratings of each movie, as float64 of length n_items (the most-popular
    baseline's score)."""
    train_items = int_array(train_items, "popularity_scores train_items")
    if train_items.size and (train_items.min() < 0 or train_items.max() >= n_items):
        raise ValueError(f"popularity_scores: received items from {train_items.min()} to "
                         f"{train_items.max()} (expected 0..{n_items - 1})")
    return np.bincount(train_items, minlength=n_items).astype(np.float64)


def relevant_pairs(test_users: np.ndarray, test_items: np.ndarray, test_ratings: np.ndarray,
                   threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The (users, items) of the test ratings that count as relevant: all of them when
    threshold <= 0, otherwise those rated >= threshold."""
    test_users = int_array(test_users, "relevant_pairs test_users")
    test_items = int_array(test_items, "relevant_pairs test_items")
    test_ratings = np.asarray(test_ratings, dtype=np.float64).reshape(-1)
    if not test_users.size == test_items.size == test_ratings.size:
        raise ValueError(f"relevant_pairs: received {test_users.size} users, {test_items.size} "
                         f"items and {test_ratings.size} ratings (expected the same number)")
    if np.isnan(threshold):
        raise ValueError("relevant_pairs: received threshold=nan (expected a number)")
    if threshold <= 0:
        return test_users, test_items
    keep = test_ratings >= threshold
    return test_users[keep], test_items[keep]


def ranking_metrics(recommended: np.ndarray, rel_indptr: np.ndarray, rel_indices: np.ndarray,
                    k: int) -> dict:
    """Precision, recall, NDCG, MAP and MAP@k of top-k lists, averaged over users.

    ``recommended`` is an int matrix (n_users, >= k) of movie indices in rank order (only the
    first k columns are read), padded with -1 where a user has fewer candidates; row r of it
    is scored against row r of the relevant movies' CSR ``(rel_indptr, rel_indices)``. Users
    without a relevant movie are left out and counted in ``users_without_relevant``.
    """
    rec = _checked_lists(recommended, k)
    n_rows = rec.shape[0]
    rel_indptr = int_array(rel_indptr, "ranking_metrics rel_indptr")
    rel_indices = int_array(rel_indices, "ranking_metrics rel_indices")
    check_csr(rel_indptr, rel_indices, n_rows, "ranking_metrics relevant")
    n_rel = np.diff(rel_indptr)
    hits = _hits(rec, n_rel, rel_indices)
    evaluated = n_rel > 0
    n_eval = int(evaluated.sum())
    hits, n_rel = hits[evaluated], n_rel[evaluated]
    positions = np.arange(1, k + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(positions + 1.0)
    n_hits = hits.sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
    ndcg = (hits * discounts).sum(axis=1) / ideal
    precision_sum = (hits * (np.cumsum(hits, axis=1) / positions)).sum(axis=1)
    return {
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_rel)),
        "ndcg": float(np.mean(ndcg)),
        "map": float(np.mean(precision_sum / n_rel)),
        "map_at_k": float(np.mean(precision_sum / np.minimum(n_rel, k))),
        "users": n_eval,
        "users_without_relevant": n_rows - n_eval,
    }


def _checked_lists(recommended: np.ndarray, k: int) -> np.ndarray:
    """The first k columns of the lists as int64, refused if they are not valid lists."""
    _check_k(k)
    rec = np.asarray(recommended)
    if rec.ndim != 2 or not np.issubdtype(rec.dtype, np.integer):
        raise ValueError(f"ranking_metrics: received recommended of shape {rec.shape} and dtype "
                         f"{rec.dtype} (expected a 2-D integer matrix)")
    if rec.shape[1] < k:
        raise ValueError(f"ranking_metrics: received recommended with {rec.shape[1]} columns "
                         f"(expected at least k={k})")
    rec = rec[:, :k].astype(np.int64, copy=False)
    if rec.size and rec.min() < PAD:
        raise ValueError(f"ranking_metrics: received movie index {rec.min()} in recommended "
                         f"(expected indices >= 0, or {PAD} for padding)")
    # A repeated movie would be counted as two hits: reject it rather than inflate the metrics.
    ordered = np.sort(rec, axis=1)
    if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)):
        raise ValueError("ranking_metrics: received a movie twice in one user's list "
                         "(expected distinct movies per row)")
    return rec


def _hits(rec: np.ndarray, n_rel: np.ndarray, rel_indices: np.ndarray) -> np.ndarray:
    """Whether each entry of the lists is one of its row's relevant movies (bool, rec's shape);
    the relevant movies of row r are the next n_rel[r] of ``rel_indices``."""
    n_rows = rec.shape[0]
    # Hits: each (row, movie) pair as one int64 key, looked up in the sorted relevant keys.
    n_cols = max(int(rec.max(initial=0)), int(rel_indices.max(initial=0))) + 1
    if n_rows * n_cols >= 2**62:
        raise ValueError(f"ranking_metrics: received {n_rows} rows and movie indices up to "
                         f"{n_cols - 1} (expected rows * movies < 2**62)")
    rel_rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_rel)
    rel_keys = np.sort(rel_rows * n_cols + rel_indices)
    if np.any(rel_keys[1:] == rel_keys[:-1]):
        raise ValueError("ranking_metrics: received a relevant movie twice for one user "
                         "(expected distinct movies per row, e.g. from csr_by_user)")
    if rel_keys.size == 0:
        raise ValueError(f"ranking_metrics: received {n_rows} users, none with a relevant movie "
                         "(expected at least one)")
    rec_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_cols + rec
    found = np.minimum(np.searchsorted(rel_keys, rec_keys), rel_keys.size - 1)
    return (rec != PAD) & (rel_keys[found] == rec_keys)


def top_k_global_order(item_scores: np.ndarray, train_indptr: np.ndarray,
                       train_indices: np.ndarray, users: np.ndarray, k: int,
                       candidates: np.ndarray | None = None) -> np.ndarray:
    """Top-k movies of each of ``users`` when every user shares one global order (highest
    ``item_scores`` first, ties by ascending movie index), skipping the user's train movies.

    ``train_indptr/train_indices`` is the train split's CSR over all users. Candidates are the
    movies in ``candidates`` (a boolean mask; by default the movies with a train rating) whose
    score is not -inf, so a movie absent from the train split is never recommended. Returns an
    int64 matrix (len(users), k), padded with -1 when a user has fewer than k candidates left.
    """
    _check_k(k)
    scores = np.asarray(item_scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"top_k_global_order: received item_scores of shape {scores.shape} "
                         "(expected 1-D, one score per movie)")
    n_items = scores.size
    train_indptr = int_array(train_indptr, "top_k_global_order train_indptr")
    train_indices = int_array(train_indices, "top_k_global_order train_indices")
    users = int_array(users, "top_k_global_order users")
    check_csr(train_indptr, train_indices, None, "top_k_global_order train")
    if train_indices.size and train_indices.max() >= n_items:
        raise ValueError(f"top_k_global_order: received train movie {train_indices.max()} "
                         f"with {n_items} item scores (expected movies 0..{n_items - 1})")
    check_rows(users, train_indptr.size - 1, "top_k_global_order")
    order = _global_order(scores, _candidate_mask(scores, train_indices, candidates))
    if order.size == 0:
        return np.full((users.size, k), PAD, dtype=np.int64)
    return _first_free(order, n_items, train_indptr, train_indices, users, k)


def _candidate_mask(scores: np.ndarray, train_indices: np.ndarray,
                    candidates: np.ndarray | None) -> np.ndarray:
    """The movies that may be recommended: ``candidates`` (default: those with a train
    rating) with a score above -inf."""
    n_items = scores.size
    if candidates is None:
        mask = np.bincount(train_indices, minlength=n_items) > 0
    else:
        mask = np.asarray(candidates)
        if mask.dtype != np.bool_ or mask.shape != (n_items,):
            raise ValueError(f"top_k_global_order: received candidates of shape {mask.shape} "
                             f"and dtype {mask.dtype} (expected a boolean mask of shape "
                             f"({n_items},))")
    if np.isnan(scores[mask]).any():
        raise ValueError("top_k_global_order: received a NaN score for a candidate movie "
                         "(expected numbers; use -inf or the candidates mask to exclude one)")
    return mask & (scores > -np.inf)


def _global_order(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The candidates, highest score first: ascending by index, then a stable sort on -score,
    so that equal scores keep ascending movie index."""
    cand = np.flatnonzero(mask)
    return cand[np.argsort(-scores[cand], kind="stable")]


def _first_free(order: np.ndarray, n_items: int, train_indptr: np.ndarray,
                train_indices: np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
    """Each user's first k movies of the global ``order`` that are not their train movies."""
    n_cand = order.size
    rank = np.full(n_items, -1, dtype=np.int64)
    rank[order] = np.arange(n_cand, dtype=np.int64)
    # For one user with excluded ranks e_0 < e_1 < ... (their train movies' positions in the
    # global order), e_i - i free positions come before e_i, so the j-th free position
    # (0-based) is j + #{i : e_i - i <= j}. Only excluded ranks with e_i - i < k matter, and
    # those satisfy e_i < k + (number of the user's train movies).
    n_rows = users.size
    sub_indptr, positions = gather_rows(train_indptr, users)
    lengths = np.diff(sub_indptr)
    row = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    excluded = rank[train_indices[positions]]
    keep = (excluded >= 0) & (excluded < k + lengths[row])
    keys = np.sort(row[keep] * n_cand + excluded[keep])
    row = keys // n_cand
    excluded = keys - row * n_cand
    row_start = np.zeros(n_rows, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n_rows)[:-1], out=row_start[1:])
    free_before = excluded - (np.arange(keys.size, dtype=np.int64) - row_start[row])
    early = free_before < k
    # skipped[r, j] = #{i : e_i - i <= j} for row r: a histogram of e_i - i, accumulated.
    skipped = np.bincount(row[early] * k + free_before[early], minlength=n_rows * k)
    skipped = np.cumsum(skipped.reshape(n_rows, k), axis=1)
    slot = np.arange(k, dtype=np.int64) + skipped
    return np.where(slot < n_cand, order[np.minimum(slot, n_cand - 1)], PAD)
