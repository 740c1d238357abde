"""The negative sampler: never a rated movie, the promised distribution, seeded and resumable."""

import numpy as np
import pytest

from movierec.core.errors import DataError
from movierec.train.negatives import POPULARITY_POWER, NegativeSampler


def _dense_ratings(n_users=40, n_movies=30, seed=0):
    """Every user rated 20 of 30 movies: two of three uniform draws collide with a positive."""
    rng = np.random.default_rng(seed)
    pairs = [(u, m) for u in range(n_users) for m in rng.choice(n_movies, 20, replace=False)]
    users, movies = (np.array(x, np.int32) for x in zip(*pairs, strict=True))
    return users, movies, n_users, n_movies


@pytest.mark.parametrize("how", ["uniform", "popularity"])
def test_no_rated_movie_is_ever_a_negative(how):
    users, movies, n_users, n_movies = _dense_ratings()
    sampler = NegativeSampler(users, movies, n_users, n_movies, how)
    asked = np.repeat(np.arange(n_users), 2_000)
    drawn = sampler.sample(asked, np.random.default_rng(1))
    rated = set(zip(users.tolist(), movies.tolist(), strict=True))
    assert not any((u, m) in rated for u, m in zip(asked.tolist(), drawn.tolist(), strict=True))
    # The collisions happened and were redrawn: about 2/3 of the first draws (uniform).
    assert sampler.stats.rejected > 0.3 * len(asked)
    assert sampler.stats.drawn == len(asked) + sampler.stats.rejected
    assert sampler.rated(users, movies).all()


def test_same_generator_state_same_negatives_and_resume_continues_exactly():
    users, movies, n_users, n_movies = _dense_ratings()
    sampler = NegativeSampler(users, movies, n_users, n_movies, "popularity")
    asked = np.repeat(np.arange(n_users), 50)
    rng = np.random.default_rng(7)
    first, second = sampler.sample(asked, rng), sampler.sample(asked, rng)
    assert not np.array_equal(first, second)  # fresh negatives every epoch
    again = np.random.default_rng(7)
    np.testing.assert_array_equal(sampler.sample(asked, again), first)
    saved = again.bit_generator.state  # what a checkpoint stores after epoch 1
    resumed = np.random.default_rng(123)
    resumed.bit_generator.state = saved
    np.testing.assert_array_equal(sampler.sample(asked, resumed), second)


def _frequencies(how, n=400_000):
    # User 0 rated movies 0..4; the other users rated the rest, so movies differ in popularity.
    users = np.array([0] * 5 + [1] * 8 + [2] * 4 + [3] * 2, np.int32)
    movies = np.array(list(range(5)) + list(range(2, 10)) + [5, 6, 7, 8] + [5, 6], np.int32)
    sampler = NegativeSampler(users, movies, 4, 12, how)  # movies 10 and 11: never rated
    drawn = sampler.sample(np.zeros(n, np.int64), np.random.default_rng(3))
    counts = np.bincount(movies, minlength=12)
    return np.bincount(drawn, minlength=12) / n, counts


def test_uniform_covers_the_unrated_catalogue_evenly():
    freq, _ = _frequencies("uniform")
    assert freq[:5].sum() == 0  # user 0's own movies
    assert freq[10:].sum() == 0  # no rating anywhere: not in the catalogue
    np.testing.assert_allclose(freq[5:10], 1 / 5, atol=0.005)


def test_popularity_follows_count_to_the_three_quarters_over_unrated_movies():
    freq, counts = _frequencies("popularity")
    weight = counts[5:10].astype(float) ** POPULARITY_POWER
    np.testing.assert_allclose(freq[5:10], weight / weight.sum(), atol=0.005)
    assert freq[:5].sum() == 0 and freq[10:].sum() == 0


def test_a_user_who_rated_the_whole_catalogue_is_refused():
    users = np.array([0, 0, 1], np.int32)
    movies = np.array([0, 1, 0], np.int32)
    with pytest.raises(DataError, match="user index 0 rated all 2 movies"):
        NegativeSampler(users, movies, 2, 2)


def test_unknown_sampling_is_refused():
    with pytest.raises(ValueError, match="how='zipf'"):
        NegativeSampler(np.array([0]), np.array([0]), 1, 2, "zipf")
