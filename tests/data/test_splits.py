
import numpy as np
import pandas as pd
import pytest

from movierec.core.columns import (
    MOVIE_COL,
    MOVIE_IDX_COL,
    RATING_COL,
    TIMESTAMP_COL,
    USER_COL,
    USER_IDX_COL,
)
from movierec.core.config import SPLITS
from movierec.core.errors import DataError
from movierec.data.preprocess import prepare
from movierec.data.splits import (
    split_rows,
    stratified_item_split,
    user_temporal_split,
)


def n_train_of(n: int, test_fraction: float) -> int:
    """The specified train count of a group of n ratings, written independently of the code."""
    return round((1 - test_fraction) * n)  # Python's round: halves to even


def ratings_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Random ratings with sparse ids, skewed group sizes and many timestamp ties."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        USER_COL: rng.choice([3, 8, 11, 40, 41, 97, 250], size=n, p=[.3, .2, .2, .1, .1, .05, .05]),
        MOVIE_COL: rng.zipf(1.6, size=n) % 53 * 7 + 1,
        RATING_COL: rng.integers(1, 11, size=n) * 0.5,
        TIMESTAMP_COL: rng.integers(1_000, 1_040, size=n),
    })


def split_frame(method: str, frame: pd.DataFrame, test_fraction: float = 0.2,
                seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return split_rows(method, frame[USER_COL].to_numpy(), frame[MOVIE_COL].to_numpy(),
                      frame[TIMESTAMP_COL].to_numpy(), test_fraction, seed)


@pytest.mark.parametrize("method", SPLITS)
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.1])
def test_every_row_lands_in_exactly_one_split(method, fraction):
    frame = ratings_frame()
    train, test = split_frame(method, frame, fraction)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert len(train) > 0 and len(test) > 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])),
                                  np.arange(len(frame)))
    # Both come shuffled: neither in row order nor grouped by user or movie.
    for rows in (train, test):
        for column in (rows, frame[USER_COL].to_numpy()[rows], frame[MOVIE_COL].to_numpy()[rows]):
            assert np.any(np.diff(column) < 0)


@pytest.mark.parametrize("method", SPLITS)
def test_the_input_columns_are_left_untouched(method):
    frame = ratings_frame()
    columns = [frame[c].to_numpy().copy() for c in (USER_COL, MOVIE_COL, TIMESTAMP_COL)]
    split_frame(method, frame)
    for column, name in zip(columns, (USER_COL, MOVIE_COL, TIMESTAMP_COL), strict=True):
        np.testing.assert_array_equal(frame[name].to_numpy(), column)


@pytest.mark.parametrize("method", SPLITS)
def test_same_seed_same_split_other_seed_other_split(method):
    frame = ratings_frame()
    a, b, c = (split_frame(method, frame, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # Another seed changes the order of both outputs, and for the random methods also which
    # rows are test (user_temporal only redraws timestamp ties at a user's cut).
    assert not np.array_equal(a[0], c[0])
    if method != "user_temporal":
        assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))


@pytest.mark.parametrize(("n", "fraction", "seed"),
                         [(10, 0.2, 0), (1001, 0.2, 1234), (7, 0.5, 3), (100, 0.01, 9)])
def test_random_is_the_original_seeded_permutation_cut(n, fraction, seed):
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(fraction * n)
    train, test = split_rows("random", np.zeros(n, np.int32), np.zeros(n, np.int32), None,
                             fraction, seed)
    np.testing.assert_array_equal(train, perm[: n - n_test])
    np.testing.assert_array_equal(test, perm[n - n_test:])


def test_stratified_item_gives_each_movie_its_share():
    # Movie 5 has a single rating: it stays in train below test_fraction 0.5. Movie sizes 1, 2,
    # 4, 5, 10, 23. At 0.25 the movie of 2 keeps round(1.5) = 2 (halves to even) and the movie
    # of 10 keeps round(7.5) = 8, as Microsoft Recommenders' round() does.
    movies = np.repeat([5, 10, 20, 30, 40, 50], [1, 2, 4, 5, 10, 23])
    for fraction in (0.2, 0.25, 0.3):
        train, test = stratified_item_split(movies, fraction, seed=3)
        for movie in np.unique(movies):
            size = int(np.sum(movies == movie))
            assert np.sum(movies[train] == movie) == n_train_of(size, fraction)
            assert np.sum(movies[test] == movie) == size - n_train_of(size, fraction)
        assert 0 not in test  # the 1-rating movie's row
    train, test = stratified_item_split(movies, 0.25, seed=3)
    held_out = [int(np.sum(movies[test] == m)) for m in (5, 10, 20, 30, 40, 50)]
    assert held_out == [0, 0, 1, 1, 2, 6]


def test_stratified_item_draws_different_rows_of_a_movie():
    movies = np.zeros(50, np.int32)
    tests = {tuple(np.sort(stratified_item_split(movies, 0.2, seed)[1])) for seed in range(5)}
    assert len(tests) == 5


def test_user_temporal_holds_out_each_users_latest_ratings():
    frame = ratings_frame(n=800, seed=2)
    users, stamps = frame[USER_COL].to_numpy(), frame[TIMESTAMP_COL].to_numpy()
    for fraction in (0.2, 0.35):
        train, test = user_temporal_split(users, stamps, fraction, seed=4)
        for user in np.unique(users):
            size = int(np.sum(users == user))
            user_test = stamps[test][users[test] == user]
            user_train = stamps[train][users[train] == user]
            assert len(user_test) == size - n_train_of(size, fraction)
            # No rating the model learns from is later than one it is scored on.
            assert user_train.max() <= user_test.min()


def test_user_temporal_known_answer_and_single_rating_user():
    # User 1: times 5, 1, 4, 2, 3 -> the latest (row 0) is test. User 2: one rating, train.
    users = np.array([1, 1, 1, 1, 1, 2])
    stamps = np.array([5, 1, 4, 2, 3, 9])
    train, test = user_temporal_split(users, stamps, 0.2, seed=0)
    assert test.tolist() == [0]
    assert sorted(train.tolist()) == [1, 2, 3, 4, 5]


def test_user_temporal_breaks_timestamp_ties_by_seed():
    # Ten ratings at the same second: which two are test is a seeded draw among them.
    users = np.zeros(10, np.int64)
    stamps = np.full(10, 1_400_000_000)
    tests = [tuple(sorted(user_temporal_split(users, stamps, 0.2, seed)[1])) for seed in range(6)]
    assert all(len(t) == 2 for t in tests)
    assert tests == [tuple(sorted(user_temporal_split(users, stamps, 0.2, s)[1]))
                     for s in range(6)]
    assert len(set(tests)) > 1
    # A tie never lets an earlier rating into test ahead of a later one.
    stamps = np.array([1, 2, 3, 3, 3, 3, 3, 3, 4, 5])
    for seed in range(6):
        train, test = user_temporal_split(users, stamps, 0.3, seed)
        assert 9 in test and 8 in test
        assert stamps[train].max() <= stamps[test].min()


@pytest.mark.parametrize("method", SPLITS)
def test_unknown_method_or_bad_fraction_is_refused(method):
    frame = ratings_frame(n=50)
    with pytest.raises(ValueError, match=r"split='chrono'.*random, stratified_item"):
        split_frame("chrono", frame)
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"test_fraction={bad!r}"):
            split_frame(method, frame, test_fraction=bad)


@pytest.mark.parametrize(("method", "users", "movies"), [
    ("random", [1, 2, 3], [1, 2, 3]),
    ("stratified_item", [1, 2, 3], [1, 2, 3]),  # every movie rated once: nothing for test
    ("user_temporal", [1, 2, 3], [1, 1, 1]),  # every user rated once
    ("stratified_item", [], []),
])
def test_an_empty_side_is_a_data_error(method, users, movies):
    stamps = np.arange(len(users))
    with pytest.raises(DataError, match=rf"{len(users)} ratings with split='{method}' and "
                                        r"test_fraction=0.1 leave an empty train or test"):
        split_rows(method, np.array(users), np.array(movies), stamps, 0.1, seed=0)


def test_user_temporal_needs_timestamps_and_columns_must_match():
    ones = np.ones(4, np.int32)
    with pytest.raises(ValueError, match="timestamps=None"):
        split_rows("user_temporal", ones, ones, None, 0.2, seed=0)
    with pytest.raises(ValueError, match="different lengths"):
        split_rows("stratified_item", ones, ones[:3], None, 0.2, seed=0)


def test_large_ids_and_timestamps_take_the_unpacked_path():
    # Keys too wide to pack with row positions into 63 bits fall back to a stable argsort.
    users = np.array([2**62, 2**62, 2**62, 2**62, -(2**62)] * 2)
    stamps = np.array([2**62, -(2**62), 0, 1, 5] * 2)
    train, test = user_temporal_split(users, stamps, 0.25, seed=0)
    assert sorted(test.tolist()) == [0, 5]  # user 2**62's two latest (tied) ratings
    assert len(train) == 8


@pytest.mark.parametrize("method", SPLITS)
def test_prepare_splits_by_method(method):
    ratings = ratings_frame(n=400, seed=5)
    movies = pd.DataFrame({MOVIE_COL: np.unique(ratings[MOVIE_COL]), "title": "t", "genres": "g"})
    prepared = prepare(ratings, movies, test_fraction=0.25, seed=2, split=method)
    train, test = split_frame(method, ratings, 0.25, seed=2)
    for table, rows in ((prepared.train, train), (prepared.test, test)):
        assert list(table.columns) == [USER_IDX_COL, MOVIE_IDX_COL, RATING_COL]
        assert len(table) == len(rows)
        np.testing.assert_array_equal(table[RATING_COL], ratings[RATING_COL].to_numpy()[rows])
    assert len(prepared.train) + len(prepared.test) == len(ratings)
    if method == "random":
        assert len(prepared.test) == 100


@pytest.mark.parametrize("method", ["stratified_item", "user_temporal"])
def test_only_the_order_of_ids_and_timestamps_matters(method):
    # Spreading ids and times over a huge range (too wide to pack into 63 bits with the row
    # positions) keeps their order and grouping, so the split must not change.
    frame = ratings_frame(n=300, seed=6)
    wide = frame.assign(**{col: frame[col].astype(np.int64) * 2**56 - 2**62
                           for col in (USER_COL, MOVIE_COL, TIMESTAMP_COL)})
    for a, b in zip(split_frame(method, frame), split_frame(method, wide), strict=True):
        np.testing.assert_array_equal(a, b)


def test_uint64_ids_beyond_int64_are_grouped_correctly():
    # Close together (so they would pack) but above 2**63 (so a cast to int64 would wrap).
    users = np.array([2**63 + 5] * 5 + [2**63], dtype=np.uint64)
    stamps = np.array([5, 1, 4, 2, 3, 9])
    train, test = user_temporal_split(users, stamps, 0.2, seed=0)
    assert test.tolist() == [0]
    assert sorted(train.tolist()) == [1, 2, 3, 4, 5]


def test_prepare_without_timestamps_splits_at_random_but_not_by_time():
    ratings = ratings_frame(n=100, seed=7).drop(columns=TIMESTAMP_COL)
    movies = pd.DataFrame({MOVIE_COL: np.unique(ratings[MOVIE_COL]), "title": "t", "genres": "g"})
    assert len(prepare(ratings, movies, 0.2, seed=1).test) == 20
    with pytest.raises(ValueError, match="timestamps=None"):
        prepare(ratings, movies, 0.2, seed=1, split="user_temporal")
