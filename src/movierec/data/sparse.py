"""Each user's movies as CSR arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from movierec.core.columns import MOVIE_IDX_COL, USER_IDX_COL
from movierec.core.files import read_parquet


def int_array(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: received an array of shape {arr.shape} (expected 1-D)")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: received dtype {arr.dtype} (expected integers)")
    return arr.astype(np.int64, copy=False)


def check_csr(indptr: np.ndarray, indices: np.ndarray, n_rows: int | None, name: str) -> None:
    if indptr.size == 0 or indptr[0] != 0 or indptr[-1] != indices.size:
        raise ValueError(f"{name}: received indptr from {indptr[:1].tolist()} to "
                         f"{indptr[-1:].tolist()} with {indices.size} indices (expected indptr "
                         "to start at 0 and end at the number of indices)")
    if np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}: received a decreasing indptr (expected non-decreasing)")
    if n_rows is not None and indptr.size != n_rows + 1:
        raise ValueError(f"{name}: received {indptr.size - 1} rows (expected {n_rows})")
    if indices.size and indices.min() < 0:
        raise ValueError(f"{name}: received index {indices.min()} (expected indices >= 0)")


def csr_by_user(users: np.ndarray, items: np.ndarray,
                n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's sorted, de-duplicated items as CSR ``(indptr, indices)``, indptr of length
    n_users + 1 (users without items get an empty row)."""
    users = int_array(users, "csr_by_user users")
    items = int_array(items, "csr_by_user items")
    if users.size != items.size:
        raise ValueError(f"csr_by_user: received {users.size} users and {items.size} items "
                         "(expected the same number)")
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"csr_by_user: received users from {users.min()} to {users.max()} "
                         f"(expected 0..{n_users - 1})")
    if items.size and items.min() < 0:
        raise ValueError(f"csr_by_user: received item {items.min()} (expected items >= 0)")
    n_cols = int(items.max()) + 1 if items.size else 1
    # One int64 key per pair: a single sort groups by user and orders each user's items, then
    # repeated pairs are dropped (a movie rated twice counts once). np.sort and a mask rather
    # than np.unique, which is much slower on tens of millions of int64 keys.
    keys = np.sort(users * n_cols + items)
    if keys.size:
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    key_users = keys // n_cols
    indices = keys - key_users * n_cols
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(key_users, minlength=n_users), out=indptr[1:])
    return indptr, indices


def gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the CSR rows ``rows`` (any order, repeats allowed): the indptr of those rows alone,
    and the position in the full CSR's indices of every entry, row after row."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    new_indptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_indptr[1:])
    positions = np.arange(new_indptr[-1], dtype=np.int64)
    positions += np.repeat(starts - new_indptr[:-1], lengths)
    return new_indptr, positions


def check_rows(rows: np.ndarray, n_rows: int, name: str) -> None:
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"{name}: received users from {rows.min()} to {rows.max()} "
                         f"(expected 0..{n_rows - 1})")


def csr_take(indptr: np.ndarray, indices: np.ndarray,
             rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of the given rows only, in the given order: aligns a per-user CSR (e.g. the
    relevant movies) with the rows of a top-k matrix computed for a subset of users."""
    indptr = int_array(indptr, "csr_take indptr")
    indices = int_array(indices, "csr_take indices")
    rows = int_array(rows, "csr_take rows")
    check_csr(indptr, indices, None, "csr_take")
    check_rows(rows, indptr.size - 1, "csr_take")
    new_indptr, positions = gather_rows(indptr, rows)
    return new_indptr, indices[positions]


@dataclass(frozen=True)
class Seen:
    """Each user's train movies (CSR, sorted) and which movies have any train rating."""

    indptr: np.ndarray  # (n_users + 1,) int64
    movies: np.ndarray  # movie indices, sorted within each user
    in_train: np.ndarray  # (n_movies,) bool: the candidates of the protocol

    @classmethod
    def from_pairs(cls, users: np.ndarray, movies: np.ndarray, n_users: int,
                   n_movies: int) -> Seen:
        indptr, indices = csr_by_user(users, movies, n_users)
        in_train = np.zeros(n_movies, bool)
        in_train[indices] = True
        return cls(indptr, indices.astype(np.int32), in_train)

    @classmethod
    def read(cls, train_path: str | Path, n_users: int, n_movies: int) -> Seen:
        """From the train split's (user_idx, movie_idx) columns."""
        train = read_parquet(train_path, columns=[USER_IDX_COL, MOVIE_IDX_COL])
        return cls.from_pairs(train[USER_IDX_COL].to_numpy(), train[MOVIE_IDX_COL].to_numpy(),
                              n_users, n_movies)

    def of(self, user: int) -> np.ndarray:
        return self.movies[self.indptr[user]: self.indptr[user + 1]]

    def users_in_train(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.indptr) > 0)
