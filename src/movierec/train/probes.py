"""NDCG@k after each epoch of a ranking objective: the validation score early stopping reads,
and the test curve the report draws.

The protocol is the evaluate stage's (``movierec.ranking``): each user's top-k list is taken
from the whole catalogue, every movie with a fit rating except the user's own fit movies, scored
exactly through the network (``movierec.nets.scoring``), and judged against the user's held-out
movies. Only the users are sampled (``train.ndcg_users``), to bound the cost on big data; the
catalogue never is, so there are no sampled negatives in the metric.
"""

from __future__ import annotations

import numpy as np

from movierec.data import sparse
from movierec.data.sparse import Seen
from movierec.nets import scoring
from movierec.ranking import metrics as ranking
from movierec.ranking.protocol import evaluation_users
from movierec.ranking.topn import recommend_all


class RankingProbe:
    """Full-catalogue NDCG@k of a model's lists for the users of some held-out pairs."""

    def __init__(self, fit_users: np.ndarray, fit_movies: np.ndarray, held_users: np.ndarray,
                 held_movies: np.ndarray, n_users: int, n_movies: int, k: int, sample: int = 0,
                 seed: int = 0):
        self.k = k
        self.seen = Seen.from_pairs(fit_users, fit_movies, n_users, n_movies)
        rel_indptr, rel_indices = sparse.csr_by_user(held_users, held_movies, n_users)
        self.users, _ = evaluation_users(self.seen.indptr, rel_indptr, held_users, sample, seed)
        self.relevant = sparse.csr_take(rel_indptr, rel_indices, self.users)

    def ndcg(self, weights: scoring.ScoringWeights) -> float:
        """NDCG@k averaged over the probe's users, for weights read by ``scoring.from_weights``
        (read once per epoch by the caller, shared by the probes of several splits)."""
        if len(self.users) == 0:
            return float("nan")
        idx, _, _ = recommend_all(weights, self.users, self.seen, self.k)
        return ranking.ranking_metrics(idx.astype(np.int64), *self.relevant, self.k)["ndcg"]
