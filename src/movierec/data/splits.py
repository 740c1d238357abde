"""Train/test splits of the ratings: which rows the model learns from and which it is scored on.

Three methods (``preprocess.split`` in params.yaml), each answering a different question:

* ``random``: a seeded shuffle of all ratings, the last ``test_fraction`` of them go to test.
  This is the tutorial's split and the pipeline's default; its exact rows are what the
  committed metrics were measured on, so it must never change.
* ``stratified_item``: every movie gives the same share of its ratings, drawn at random, to
  test: the per-item proportional split of Microsoft Recommenders' MovieLens ranking
  benchmark (``python_stratified_split(filter_by="item")``). Popular and rare movies are then
  scored in proportion to their ratings, not as a random split happens to draw them.
* ``user_temporal``: every user's latest ratings go to test, so the model predicts each user's
  future from their past (no peeking at later ratings, as a deployed recommender never can).

Per group (movie or user) of n ratings, ``round((1 - test_fraction) * n)`` go to train (to the
nearest integer, halves to even, as Python's ``round``) and the rest to test: Microsoft
Recommenders' rule (``split_pandas_data_with_ratios``), so that the ranking table can be read
next to theirs. A group with a single rating stays in train when test_fraction < 0.5; at 0.2
groups of 3 ratings and more give at least one to test.

Everything is vectorised (a few sorts of packed 64-bit keys), as MovieLens 20M has 20 million
rows; no Python loop runs over users or movies.
"""

from __future__ import annotations

import numpy as np

from movierec.core.config import SPLITS
from movierec.core.errors import DataError


def _check_test_fraction(test_fraction: float) -> None:
    """Refuses a fraction that would leave one side empty by construction (or is not a number)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} "
                         "(expected a number strictly between 0 and 1)")


def _check_both_sides(n_rows: int, n_test: int, method: str, test_fraction: float) -> None:
    """An empty train or test split would only fail later, in training or scoring; stop here."""
    if n_test < 1 or n_test > n_rows - 1:
        raise DataError(f"{n_rows} ratings with split={method!r} and "
                        f"test_fraction={test_fraction} leave an empty train or test split "
                        "(expected at least one rating in each)")


def split_indices(n_rows: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``random`` split: shuffles row numbers with ``seed``, the last ``test_fraction`` is test.

    Its rows must never change: the default pipeline's committed metrics were measured on them.
    """
    _check_test_fraction(test_fraction)
    n_test = round(test_fraction * n_rows)
    _check_both_sides(n_rows, n_test, "random", test_fraction)
    perm = np.random.default_rng(seed).permutation(n_rows)
    return perm[: n_rows - n_test], perm[n_rows - n_test:]


def _offset_from_min(column: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``column - column.min()`` as int64 and its width in bits; None if it cannot be packed."""
    if column.dtype.kind not in "iu" or len(column) == 0:
        return None
    low, high = int(column.min()), int(column.max())
    bits = (high - low).bit_length()
    if bits > 63:
        return None
    if column.dtype == np.uint64:  # a cast to int64 before subtracting could wrap
        return (column - np.uint64(low)).astype(np.int64), bits
    offset = column.astype(np.int64)
    offset -= low
    return offset, bits


def _stable_sort(order: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorders ``order`` (all row numbers, in some order) by ``keys[row]``, keeping ``order``
    among equal keys; returns the new order and its keys (offset by a constant at most).

    Packs each row's key and its position in ``order`` into one int64 when they fit: the values
    are then distinct, so numpy's plain sort (faster than a stable argsort) is deterministic,
    and the keys are read in row order (a random gather costs as much as a sort).
    """
    n = len(order)
    position_bits = max(n - 1, 1).bit_length()
    offset = _offset_from_min(keys)
    if offset is None or offset[1] + position_bits > 63:
        by_key = np.argsort(keys[order], kind="stable")
        return order[by_key], keys[order[by_key]]
    # In-place steps throughout: at 20M rows each fresh array costs a noticeable share of the time.
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n, dtype=np.int64)
    packed = offset[0]
    packed <<= position_bits
    packed |= position
    packed.sort()
    np.bitwise_and(packed, (1 << position_bits) - 1, out=position)
    packed >>= position_bits
    return order[position], packed


def _train_mask_in_group_order(sorted_groups: np.ndarray, test_fraction: float) -> np.ndarray:
    """For rows sorted by group (in the order each group cedes them), True for the train ones.

    Each group's first ``round((1 - test_fraction) * n)`` rows are train, the rest test.
    """
    n = len(sorted_groups)
    is_start = np.ones(n, dtype=bool)
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    sizes = np.diff(starts, append=n)
    # np.round rounds halves to even, as Python's round does in Microsoft Recommenders.
    n_train = np.round((1.0 - test_fraction) * sizes).astype(np.int64)
    # Row i (in group order) is train when it comes before its group's first test row.
    return np.arange(n) < np.repeat(starts + n_train, sizes)


def _grouped_split(groups: np.ndarray, order: np.ndarray, test_fraction: float, method: str,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cuts each group of ``groups``, taking its rows in the order of ``order`` (the last ones
    go to test); returns shuffled row numbers.

    Both outputs come in a fresh seeded random order: a file grouped by movie or user would be
    an odd (and, for a reader that does not reshuffle, a biased) order to train on.
    """
    order, sorted_groups = _stable_sort(order, groups)
    is_train = np.empty(len(order), dtype=bool)
    is_train[order] = _train_mask_in_group_order(sorted_groups, test_fraction)
    n_test = len(order) - int(np.count_nonzero(is_train))
    _check_both_sides(len(order), n_test, method, test_fraction)
    # A draw independent of the one that chose the test rows, so the output order says nothing
    # about which rows a group kept.
    shuffled = rng.permutation(len(order))
    keep = is_train[shuffled]
    return shuffled[keep], shuffled[~keep]


def stratified_item_split(movies: np.ndarray, test_fraction: float,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``stratified_item`` split: each movie's test share is drawn at random with ``seed``."""
    _check_test_fraction(test_fraction)
    movies = np.asarray(movies)
    rng = np.random.default_rng(seed)
    # Cutting each movie's ratings in a random order makes its test rows a random draw.
    return _grouped_split(movies, rng.permutation(len(movies)), test_fraction, "stratified_item",
                          rng)


def user_temporal_split(users: np.ndarray, timestamps: np.ndarray, test_fraction: float,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``user_temporal`` split: each user's latest ratings are test.

    Ratings at the same second are ordered by a ``seed``-ed draw, so a tie at a user's cut is
    settled the same way on every run.
    """
    _check_test_fraction(test_fraction)
    users, timestamps = np.asarray(users), np.asarray(timestamps)
    rng = np.random.default_rng(seed)
    # Sorting a random order by time (stably) settles ties in time at random.
    by_time, _ = _stable_sort(rng.permutation(len(users)), timestamps)
    return _grouped_split(users, by_time, test_fraction, "user_temporal", rng)


def split_rows(method: str, users: np.ndarray, movies: np.ndarray,
               timestamps: np.ndarray | None, test_fraction: float,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits ratings given column-wise; returns (train_rows, test_rows) as int64 row numbers.

    ``users``, ``movies`` and ``timestamps`` hold one entry per rating (ids or indices, any
    integers); ``timestamps`` may be None except for ``user_temporal``.
    """
    if method not in SPLITS:
        raise ValueError(f"split={method!r} (expected one of {', '.join(SPLITS)})")
    n_rows = len(users)
    lengths = {"users": n_rows, "movies": len(movies)}
    if timestamps is not None:
        lengths["timestamps"] = len(timestamps)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths} (expected one per rating)")
    if method == "random":
        return split_indices(n_rows, test_fraction, seed)
    if method == "stratified_item":
        return stratified_item_split(movies, test_fraction, seed)
    if timestamps is None:
        raise ValueError("split='user_temporal' got timestamps=None "
                         "(expected one timestamp per rating)")
    return user_temporal_split(users, timestamps, test_fraction, seed)
