"""What training minimises, and the examples each epoch is made of (``train.objective``).

* ``rating`` (the tutorial): the squared error of the network's output against the rating
  centred on the training mean. An epoch is the fit ratings, shuffled.
* ``bce``: implicit feedback, as NCF learns it. Every rated (user, movie) pair is a positive
  with label 1, and for each of them ``train.negatives`` movies the user did not rate, sampled
  afresh every epoch, are examples with label 0. The network's output is a logit, and the loss
  is the binary cross-entropy ``-y log sigmoid(s) - (1 - y) log(1 - sigmoid(s))``.
* ``bpr``: Bayesian personalised ranking. For each positive (u, i), ``train.negatives``
  triples (u, i, j), each with a sampled movie j the user did not rate; the loss is
  ``-log sigmoid(s(u, i) - s(u, j))``: only the order of the two scores matters.
* ``softmax``: each positive (u, i) against a pool of movies shared by the whole batch (the
  batch's positives and ``train.negatives`` sampled movies): the cross-entropy of the softmax
  over the pool's scores, corrected for how the pool was drawn (``movierec.train.pools``). An
  epoch is the fit ratings, shuffled; the pools are drawn inside the training step.

Rating values are not used by the ranking objectives: a rated movie is a positive whatever its
stars (Microsoft Recommenders' benchmark treats every test rating as relevant too). The
training step's terms (``movierec.nets.fused``) use TensorFlow's stable primitives
(``sigmoid_cross_entropy_with_logits``, ``softplus``), which never take the log of a
rounded-to-zero sigmoid; :func:`mean_loss` here is the same in float64 NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movierec.core.config import OBJECTIVES
from movierec.train.negatives import NegativeSampler


def examples_per_rating(objective: str, negatives: int) -> int:
    """How many examples one fit rating gives an epoch (what :func:`epoch_data` builds)."""
    return {"rating": 1, "bce": 1 + negatives, "bpr": negatives, "softmax": 1}[objective]


@dataclass(frozen=True)
class EpochData:
    """One epoch's examples, in training order. ``targets``: centred ratings (rating), labels
    (bce), empty (bpr). ``negatives``: bpr's negative movie per triple, empty otherwise."""

    users: np.ndarray  # int32
    movies: np.ndarray  # int32: the rated movie (rating, bpr) or the example's movie (bce)
    targets: np.ndarray  # float32
    negatives: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.users)


def epoch_data(objective: str, users: np.ndarray, movies: np.ndarray, targets: np.ndarray,
               rng: np.random.Generator, sampler: NegativeSampler | None = None,
               negatives: int = 1) -> EpochData:
    """The examples of one epoch, shuffled by ``rng`` (which also draws the negatives).

    ``users``, ``movies``, ``targets`` are the fit data's ratings (targets centred). For the
    rating and softmax objectives the rng makes exactly one call, a permutation of the ratings, as
    ``model.fit(shuffle=True)`` would, so a rating run shuffles as the tutorial's training does.
    """
    empty = np.zeros(0, np.int32)
    users = np.asarray(users, np.int32)
    movies = np.asarray(movies, np.int32)
    if objective in ("rating", "softmax"):
        order = rng.permutation(len(users))
        kept = (np.asarray(targets, np.float32)[order] if objective == "rating"
                else np.zeros(0, np.float32))
        return EpochData(users[order], movies[order], kept, empty)
    if objective not in OBJECTIVES:
        raise ValueError(f"epoch_data: received objective={objective!r} (expected one of "
                         f"{', '.join(OBJECTIVES)})")
    if sampler is None or negatives < 1:
        raise ValueError(f"epoch_data: objective {objective!r} needs a sampler and negatives "
                         f">= 1 (received {sampler!r} and {negatives})")
    repeated = np.repeat(users, negatives)
    drawn = sampler.sample(repeated, rng)
    if objective == "bce":
        all_users = np.concatenate([users, repeated])
        all_movies = np.concatenate([movies, drawn])
        labels = np.concatenate([np.ones(len(users), np.float32),
                                 np.zeros(len(repeated), np.float32)])
        order = rng.permutation(len(all_users))
        return EpochData(all_users[order], all_movies[order], labels[order], empty)
    order = rng.permutation(len(repeated))
    return EpochData(repeated[order], np.repeat(movies, negatives)[order],
                     np.zeros(0, np.float32), drawn[order])


def mean_loss(objective: str, scores: np.ndarray, targets: np.ndarray,
              negative_scores: np.ndarray | None = None) -> float:
    """The objective's mean loss in float64 NumPy, for scoring held-out examples after an epoch
    (the same formulas as the training step's terms in ``movierec.nets.fused``;
    ``negative_scores`` for bpr)."""
    s = np.asarray(scores, np.float64)
    if objective == "rating":
        return float(np.mean(np.square(s - targets)))
    if objective == "bce":  # softplus(s) - y s, written to stay finite for any s
        return float(np.mean(np.maximum(s, 0) - s * targets + np.log1p(np.exp(-np.abs(s)))))
    if objective == "bpr":
        return float(np.mean(np.logaddexp(0.0, np.asarray(negative_scores, np.float64) - s)))
    raise ValueError(f"mean_loss: received objective={objective!r} (expected one of "
                     f"{', '.join(OBJECTIVES)})")
