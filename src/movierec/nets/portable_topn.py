"""A user's top-n movies from the portable model, with Keras and NumPy alone.

This file travels inside the exported model's folder (``topn.py``, beside ``model.keras`` and
``seen.npz``) and imports nothing of the project that wrote it:

    python topn.py 42 -n 10          # the 10 best movies user 42 has not rated in train
    from topn import Portable; Portable(".").top_n(42, 10)   # [(movieId, score), ...]

It scores every movie the model knows for the user, leaves out the movies the user rated in
the train split (``seen.npz``, as the pipeline's recommend stage does) and sorts the rest by
score, ties by movie id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import numpy as np

MODEL_FILE = "model.keras"
SEEN_FILE = "seen.npz"
OOV_ROWS = 1  # the lookups' out-of-vocabulary slot, before the known ids


class Portable:
    """The portable model and the train split's (user, movie) pairs it must not recommend."""

    def __init__(self, folder: str | Path = "."):
        folder = Path(folder)
        self.model = keras.saving.load_model(folder / MODEL_FILE, safe_mode=True)
        self.movie_ids = np.asarray(
            self.model.get_layer("movie_lookup").get_vocabulary()[OOV_ROWS:], np.int64)
        with np.load(folder / SEEN_FILE) as seen:
            self.seen_users = seen["user_ids"]  # ascending
            self.seen_indptr = seen["indptr"]
            self.seen_movies = seen["movie_ids"]

    def rated(self, user_id: int) -> np.ndarray:
        """The movie ids the user rated in the train split (empty for an unknown user)."""
        i = int(np.searchsorted(self.seen_users, user_id))
        if i == len(self.seen_users) or self.seen_users[i] != user_id:
            return np.empty(0, self.seen_movies.dtype)
        return self.seen_movies[self.seen_indptr[i]:self.seen_indptr[i + 1]]

    def scores(self, user_id: int) -> np.ndarray:
        """The model's output for (user_id, every known movie), in ``movie_ids`` order."""
        users = np.full(len(self.movie_ids), user_id, np.int64)
        out = self.model.predict({"userId": users, "movieId": self.movie_ids},
                                 batch_size=max(len(users), 1), verbose=0)
        return np.asarray(out, np.float64).reshape(-1)

    def top_n(self, user_id: int, n: int = 10) -> list[tuple[int, float]]:
        """The n best (movieId, score) pairs among the movies the user has not rated."""
        scores = self.scores(user_id)
        keep = ~np.isin(self.movie_ids, self.rated(user_id))
        ids, scores = self.movie_ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:n]
        return [(int(ids[i]), float(scores[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user", type=int, help="MovieLens userId")
    parser.add_argument("-n", type=int, default=10, help="how many movies (default 10)")
    parser.add_argument("--folder", default=str(Path(__file__).resolve().parent),
                        help="the exported model's folder (default: this file's)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n {args.n} (expected a positive integer)")
    for movie_id, score in Portable(args.folder).top_n(args.user, args.n):
        print(f"{movie_id}\t{score:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
