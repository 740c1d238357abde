import numpy as np
import pandas as pd
import pytest

from movierec.core.columns import MOVIE_COL, MOVIE_IDX_COL, RATING_COL, USER_COL, USER_IDX_COL
from movierec.core.errors import DataError
from movierec.data.preprocess import index_ids, prepare
from movierec.data.splits import split_indices


def test_index_ids_is_contiguous_sorted_and_round_trips():
    ids = np.array([50, 7, 131262, 7, 50, 3])
    codes, uniques = index_ids(ids)
    assert codes.tolist() == [2, 1, 3, 1, 2, 0]
    assert uniques.tolist() == [3, 7, 50, 131262]
    np.testing.assert_array_equal(uniques[codes], ids)


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.2), (1001, 0.2), (7, 0.5), (100, 0.01)])
def test_split_sizes_and_partition(n, fraction):
    train, test = split_indices(n, fraction, seed=0)
    assert len(test) == round(fraction * n)
    assert len(train) + len(test) == n
    # Every row lands in exactly one split: nothing lost, nothing duplicated.
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))


def test_same_seed_same_split_other_seed_other_split():
    a = split_indices(1000, 0.2, seed=1)
    b = split_indices(1000, 0.2, seed=1)
    c = split_indices(1000, 0.2, seed=2)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))


def test_split_refuses_an_empty_side():
    with pytest.raises(DataError, match="empty train or test"):
        split_indices(3, 0.1, seed=0)


def test_prepare_keeps_every_rating_and_maps_back(twin_30k):
    ratings, movies = twin_30k.ratings, twin_30k.movies
    prepared = prepare(ratings, movies, test_fraction=0.2, seed=5)
    both = pd.concat([prepared.train, prepared.test], ignore_index=True)
    assert len(prepared.test) == round(0.2 * len(ratings))
    assert len(both) == len(ratings)
    # Indices are contiguous and the mappings hold row i at index i.
    assert prepared.users[USER_IDX_COL].tolist() == list(range(ratings[USER_COL].nunique()))
    assert prepared.movies[MOVIE_IDX_COL].tolist() == list(range(ratings[MOVIE_COL].nunique()))
    # Map indices back to ids: the multiset of (user, movie, rating) rows is unchanged.
    back = pd.DataFrame({
        USER_COL: prepared.users[USER_COL].to_numpy()[both[USER_IDX_COL]],
        MOVIE_COL: prepared.movies[MOVIE_COL].to_numpy()[both[MOVIE_IDX_COL]],
        RATING_COL: both[RATING_COL].to_numpy(),
    })
    key = [USER_COL, MOVIE_COL]
    pd.testing.assert_frame_equal(
        back.sort_values(key, ignore_index=True),
        ratings[[USER_COL, MOVIE_COL, RATING_COL]].sort_values(key, ignore_index=True),
        check_dtype=False)
    # Titles come along for every rated movie.
    assert prepared.movies["title"].notna().all()


def test_prepare_is_deterministic(twin_30k):
    a = prepare(twin_30k.ratings, twin_30k.movies, 0.2, seed=9)
    b = prepare(twin_30k.ratings, twin_30k.movies, 0.2, seed=9)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.train, b.train)
