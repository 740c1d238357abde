"""Who is ranked, against what: the users of the full-catalogue protocol and their candidates."""

from __future__ import annotations

import numpy as np


def candidates_per_user(train_indptr: np.ndarray, train_indices: np.ndarray,
                        users: np.ndarray) -> np.ndarray:
    """How many movies each user can be recommended: the train split's movies minus their own
    (a CSR row holds each movie once)."""
    n_train_movies = np.count_nonzero(np.bincount(train_indices))
    return n_train_movies - np.diff(train_indptr)[users]


def evaluation_users(train_indptr: np.ndarray, rel_indptr: np.ndarray, test_users: np.ndarray,
                     sample: int, seed: int) -> tuple[np.ndarray, dict]:
    """The users ranked: test users with a train rating and a relevant test movie, all of them
    or a seeded sample of ``sample``; and the counts of those left out."""
    in_test = np.zeros(len(train_indptr) - 1, bool)
    in_test[test_users] = True
    has_train = np.diff(train_indptr) > 0
    has_relevant = np.diff(rel_indptr) > 0
    users = np.flatnonzero(in_test & has_train & has_relevant)
    counts = {"test_users": int(in_test.sum()),
              "without_train_ratings": int((in_test & ~has_train).sum()),
              "without_relevant": int((in_test & has_train & ~has_relevant).sum())}
    if sample and sample < len(users):
        users = np.sort(np.random.default_rng(seed).choice(users, sample, replace=False))
    return users, counts
