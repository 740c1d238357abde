"""The MovieLens releases: where they are, how to verify them and how their files are laid out.

Sizes and sha256 of the zips as TensorFlow Datasets' MovieLens builder records them; numbers of
ratings and users as GroupLens publishes them (https://grouplens.org/datasets/movielens/).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

BASE_URL = "https://files.grouplens.org/datasets/movielens/"

# Test hook and mirror support: a JSON file {release: {"url": ..., "size": ..., "sha256": ...,
# "ratings": ..., "users": ...}} whose fields replace the built-in ones. The tests use it to serve
# small fixture zips from 127.0.0.1; the checks themselves are never switched off.
OVERRIDE_ENV = "MOVIEREC_RELEASES"


@dataclass(frozen=True)
class Release:
    name: str
    url: str
    size: int  # bytes of the zip
    sha256: str
    ratings_member: str  # path inside the zip
    ratings_format: str  # csv | dat | udata
    movies_member: str
    movies_format: str  # csv | dat | uitem
    movies_encoding: str
    ratings: int  # published number of ratings
    users: int  # published number of users
    whole_stars: bool  # True where ratings are 1..5 in whole stars


def _release(name, size, sha256, ratings_member, ratings_format, movies_member, movies_format,
             movies_encoding, ratings, users, whole_stars=False) -> Release:
    return Release(name, BASE_URL + f"{name}.zip", size, sha256, ratings_member, ratings_format,
                   movies_member, movies_format, movies_encoding, ratings, users, whole_stars)


_BUILTIN = {r.name: r for r in (
    _release("ml-latest-small", 978_202,
             "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
             "ml-latest-small/ratings.csv", "csv", "ml-latest-small/movies.csv", "csv", "utf-8",
             100_836, 610),
    _release("ml-100k", 4_924_029,
             "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
             "ml-100k/u.data", "udata", "ml-100k/u.item", "uitem", "latin-1",
             100_000, 943, whole_stars=True),
    _release("ml-1m", 5_917_549,
             "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
             "ml-1m/ratings.dat", "dat", "ml-1m/movies.dat", "dat", "latin-1",
             1_000_209, 6_040, whole_stars=True),
    _release("ml-10m", 65_566_137,
             "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
             "ml-10M100K/ratings.dat", "dat", "ml-10M100K/movies.dat", "dat", "utf-8",
             10_000_054, 71_567),
    _release("ml-20m", 198_702_078,
             "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
             "ml-20m/ratings.csv", "csv", "ml-20m/movies.csv", "csv", "utf-8",
             20_000_263, 138_493),
    _release("ml-25m", 261_978_986,
             "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
             "ml-25m/ratings.csv", "csv", "ml-25m/movies.csv", "csv", "utf-8",
             25_000_095, 162_541),
    _release("ml-32m", 238_950_008,
             "e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee",
             "ml-32m/ratings.csv", "csv", "ml-32m/movies.csv", "csv", "utf-8",
             32_000_204, 200_948),
)}

RELEASE_NAMES = tuple(_BUILTIN)


def releases() -> dict[str, Release]:
    """The releases, with any overrides from the file named by $MOVIEREC_RELEASES applied."""
    path = os.environ.get(OVERRIDE_ENV)
    if not path:
        return dict(_BUILTIN)
    with open(path, encoding="utf-8") as fh:
        overrides = json.load(fh)
    allowed = {"url", "size", "sha256", "ratings", "users"}
    out = dict(_BUILTIN)
    for name, fields in overrides.items():
        if name not in out or not set(fields) <= allowed:
            raise ValueError(f"{path}: bad override for {name!r} (expected a release name and "
                             f"fields among {sorted(allowed)})")
        out[name] = replace(out[name], **fields)
    return out


def release(name: str) -> Release:
    return releases()[name]


def by_sha256(digest: str) -> Release | None:
    """The release whose zip has this sha256, if any."""
    return next((r for r in releases().values() if r.sha256 == digest), None)
