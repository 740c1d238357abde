"""The evaluate stage's ranking section: the model's lists next to three baselines' lists.

All four are scored by ``movierec.ranking.metrics`` on the same users with the same protocol: the
model's lists come from the recommend stage (scored once per run), the most-popular list ranks
movies by their number of train ratings, the bias list by the movie bias of the user + movie
bias model (the user's own bias and the mean do not change a user's order), and EASE's by its
item-item scores (``movierec.evaluate.ease``), lambda chosen on a hold-out of the train split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movierec.core.columns import MOVIE_COL, MOVIE_IDX_COL, RATING_COL, USER_COL, USER_IDX_COL
from movierec.core.config import EvaluateParams
from movierec.core.errors import DataError
from movierec.data import sparse
from movierec.evaluate.ease import ease_lists
from movierec.ranking import metrics as ranking
from movierec.ranking.protocol import candidates_per_user, evaluation_users
from movierec.ranking.topn import RANK_COL

METRICS = ("precision", "recall", "ndcg", "map", "map_at_k")


def lists_from_table(top_n: pd.DataFrame, users: np.ndarray, user_ids: np.ndarray,
                     movie_ids: np.ndarray, k: int, n_candidates: np.ndarray,
                     source: str) -> np.ndarray:
    """The recommend stage's lists as a (len(users), k) matrix of movie indices, -1 padded.

    ``user_ids`` / ``movie_ids`` map indices to MovieLens ids (ascending, as preprocess
    writes them); ``n_candidates[i]`` is how many movies ``users[i]`` could be recommended.
    A list shorter than min(k, n_candidates) means the stage wrote fewer than k per user.
    """
    top_n = top_n[top_n[RANK_COL] <= k]
    u = np.searchsorted(user_ids, top_n[USER_COL].to_numpy())
    m = np.searchsorted(movie_ids, top_n[MOVIE_COL].to_numpy())
    u_ok = (u < len(user_ids)) & (user_ids[np.minimum(u, len(user_ids) - 1)]
                                 == top_n[USER_COL].to_numpy())
    m_ok = (m < len(movie_ids)) & (movie_ids[np.minimum(m, len(movie_ids) - 1)]
                                  == top_n[MOVIE_COL].to_numpy())
    if not (u_ok.all() and m_ok.all()):
        raise DataError(f"{source}: ids that the user or movie index does not hold (expected "
                        "lists written from the same preprocess outputs; rerun dvc repro)")
    row_of_user = np.full(len(user_ids), -1, np.int64)
    row_of_user[users] = np.arange(len(users))
    rows = row_of_user[u]
    keep = rows >= 0
    out = np.full((len(users), k), ranking.PAD, np.int64)
    out[rows[keep], top_n[RANK_COL].to_numpy()[keep] - 1] = m[keep]
    lengths = (out != ranking.PAD).sum(axis=1)
    if np.any(lengths < np.minimum(k, n_candidates)):
        raise DataError(f"{source}: lists of at most {int(lengths.max(initial=0))} movies "
                        f"(expected at least evaluate.k = {k}; set recommend.n >= evaluate.k)")
    return out


def ranking_report(model_lists: np.ndarray, users: np.ndarray, counts: dict,
                   train_indptr: np.ndarray, train_indices: np.ndarray, rel_indptr: np.ndarray,
                   rel_indices: np.ndarray, movie_bias: np.ndarray, k: int,
                   threshold: float, more: dict[str, np.ndarray] | None = None) -> dict:
    """The ``ranking`` section of metrics/test.json; ``more`` holds other baselines' lists
    (rows aligned with ``users``), scored after the built-in ones."""
    n_movies = len(movie_bias)
    popularity = ranking.popularity_scores(train_indices, n_movies)
    rel = sparse.csr_take(rel_indptr, rel_indices, users)
    lists = {
        "model": model_lists,
        "popularity": ranking.top_k_global_order(popularity, train_indptr, train_indices,
                                                 users, k),
        "biases": ranking.top_k_global_order(movie_bias, train_indptr, train_indices, users, k),
        **(more or {}),
    }
    report: dict = {"k": k, "relevance_threshold": threshold, "users": len(users),
                    "users_left_out": counts}
    for name, recommended in lists.items():
        result = ranking.ranking_metrics(recommended, *rel, k)
        report[name] = {metric: result[metric] for metric in METRICS}
    return report


def ranking_section(train: pd.DataFrame, test: pd.DataFrame, top_n: pd.DataFrame,
                    top_n_source: str, user_ids: np.ndarray, movie_ids: np.ndarray,
                    movie_bias: np.ndarray, params: EvaluateParams) -> dict:
    """The evaluate stage's ranking section from its input tables (indices as preprocess
    wrote them; ``user_ids`` / ``movie_ids`` map them to MovieLens ids)."""
    n_users = len(user_ids)
    train_indptr, train_indices = sparse.csr_by_user(train[USER_IDX_COL].to_numpy(),
                                                      train[MOVIE_IDX_COL].to_numpy(), n_users)
    rel_users, rel_movies = ranking.relevant_pairs(
        test[USER_IDX_COL].to_numpy(), test[MOVIE_IDX_COL].to_numpy(),
        test[RATING_COL].to_numpy(), params.relevance_threshold)
    rel_indptr, rel_indices = sparse.csr_by_user(rel_users, rel_movies, n_users)
    users, counts = evaluation_users(train_indptr, rel_indptr, test[USER_IDX_COL].to_numpy(),
                                     params.ranking_users, params.ranking_seed)
    if len(users) == 0:
        raise DataError(f"no test user has a train rating and a test rating >= "
                        f"evaluate.relevance_threshold = {params.relevance_threshold} "
                        "(expected at least one; lower the threshold)")
    lists = lists_from_table(top_n, users, user_ids, movie_ids, params.k,
                             candidates_per_user(train_indptr, train_indices, users),
                             top_n_source)
    ease, ease_fit = ease_lists(train_indptr, train_indices, len(movie_ids), users, params.k,
                                params.ease_lambda, params.ease_max_items, params.ease_holdout,
                                params.ranking_seed, params.ease_holdout_users)
    report = ranking_report(lists, users, counts, train_indptr, train_indices, rel_indptr,
                            rel_indices, movie_bias, params.k, params.relevance_threshold,
                            {"ease": ease})
    report["ease_fit"] = ease_fit
    return report
