"""Small networks with random weights for the tests, built from a spec as the library does."""

import keras
import numpy as np
import tensorflow as tf

from movierec.core.config import MODELS, OBJECTIVES  # noqa: F401  (re-used by the tests)
from movierec.nets import scoring
from movierec.nets.keras_model import build_model, for_saving, weights_of
from movierec.nets.spec import NetSpec

KINDS = MODELS  # every variant and objective the params accept


def spec_of(kind: str, n_users: int, n_movies: int, latent_dim: int = 6, hidden: int = 16,
            dropout: float = 0.0, objective: str = "rating", train_mean: float = 0.0) -> NetSpec:
    return NetSpec(kind, n_users, n_movies, latent_dim, hidden, dropout, objective,
                   train_mean if objective == "rating" else 0.0)


def random_model(spec: NetSpec, seed: int = 0, scale: float = 0.5) -> keras.Model:
    """The centred network of ``spec`` with every weight drawn from N(0, scale): Keras'
    zero biases would hide bugs, and a wide spread puts the side branch's inputs on both
    sides of elu's kink."""
    model = build_model(spec)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, scale, v.shape).astype(np.float32))
    return model


def saved_form(spec: NetSpec, seed: int = 0, scale: float = 0.5) -> keras.Model:
    """What the train stage saves for ``spec``: a rating model adds the mean."""
    return for_saving(random_model(spec, seed, scale), spec)


def scorer(model: keras.Model, spec: NetSpec) -> scoring.ScoringWeights:
    return scoring.from_weights(spec, weights_of(model, spec))


def expected_weight_count(spec: NetSpec) -> int:
    """The tutorial's parameter count by formula: embeddings, plus biases (main branch), plus
    Dense(2K -> H) and Dense(H -> 1) (side branch)."""
    n, m, k, h = spec.n_users, spec.n_movies, spec.latent_dim, spec.hidden_units
    main = n + m if spec.has_main else 0
    side = (2 * k * h + h) + (h + 1) if spec.has_side else 0
    return (n + m) * k + main + side


def planted_parity(n_users: int, n_movies: int, per_user: int, seed: int = 0):
    """A planted ranking: users in the first half rate only even movies, the others only odd
    ones, ``per_user`` draws each (duplicates possible); (users, movies) as int32."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user).astype(np.int32)
    movies = np.array([2 * rng.integers(0, n_movies // 2) + (u >= n_users // 2) for u in users],
                      np.int32)
    return users, movies


def share_ranked_own_parity_first(loop, n_users: int, n_movies: int) -> float:
    """The share of (user, unrated movie of the user's parity, movie of the other parity) that
    the loop's model scores in that order: near 1 once it has learned :func:`planted_parity`."""
    u = np.repeat(np.arange(n_users), n_movies // 2).astype(np.int32)
    own = np.tile(np.arange(0, n_movies, 2), n_users) + (u >= n_users // 2)
    other = np.tile(np.arange(0, n_movies, 2), n_users) + (u < n_users // 2)
    s_own = loop.predict(tf.constant(u), tf.constant(own.astype(np.int32)))
    s_other = loop.predict(tf.constant(u), tf.constant(other.astype(np.int32)))
    return float(np.mean(s_own > s_other))


def rated_per_user(n_users: int, n_movies: int, seed: int = 0, per_user: int = 5):
    """(users, movies): each user rates ``per_user`` distinct movies at random, never the last
    movie (outside the catalogue, so never in a pool)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user).astype(np.int32)
    movies = np.concatenate([rng.choice(n_movies - 1, per_user, replace=False)
                             for _ in range(n_users)]).astype(np.int32)
    return users, movies
