"""An offline, deterministic twin of MovieLens 20M.

The twin copies the published shape of ML-20M (shared/docs/movielens.md): the half-star
histogram, at least 20 ratings per user, a long-tailed number of ratings per movie, sparse
movieIds and timestamps between 1995 and 2015. Ratings come from a planted structure (user and
movie biases, latent factors tied to genres, a nonlinear "era" taste and noise), so a model has
something real to learn, then are mapped by rank onto the ML-20M histogram.

Everything is vectorised: the full-size twin (20M ratings) is generated in well under a minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from movierec.columns import (
    GENRES_COL,
    MOVIE_COL,
    RATING_COL,
    TIMESTAMP_COL,
    TITLE_COL,
    USER_COL,
)

# ---- Published ML-20M figures --------------------------------------------------------------
ML20M_RATINGS = 20_000_263
ML20M_RATED_MOVIES = 26_744
ML20M_LISTED_MOVIES = 27_278
ML20M_MEAN_PER_USER = 144.4
ML20M_MAX_MOVIE_ID = 131_262  # ids are sparse: 27,278 movies spread over 1..131,262
STARS = np.arange(1, 11) * 0.5
STAR_COUNTS = np.array([239_125, 680_732, 279_252, 1_430_997, 883_398, 4_291_193, 2_200_156,
                        5_561_926, 1_534_824, 2_898_660])
FIRST_TIMESTAMP = 789_652_009  # 1995-01-09 (UTC), the first ML-20M rating
LAST_TIMESTAMP = 1_427_784_002  # 2015-03-31 (UTC), the last one
MIN_RATINGS_PER_USER = 20  # GroupLens kept only users with at least 20 ratings

# Quantile curves, interpolated log-linearly. The published points are min, median, p90, p95, p99
# and max; the p25, p75 and p99.9 points are not published and were fitted so that the curve's
# mean matches the published mean (144.4 ratings per user, 747.8 per rated movie).
USER_QUANTILES = ([0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0],
                  [20, 35, 68, 140, 334, 520, 1113, 1900, 9254])
MOVIE_QUANTILES = ([0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0],
                   [1, 3, 18, 200, 1306, 3614, 14396, 25000, 67310])

# Smaller twins keep the per-user distribution (every user has >= 20 ratings) and scale the
# number of movies as size**0.6, which is how the MovieLens releases themselves grow
# (ML-1M: 3,706 rated movies; ML-20M: 26,744; 20x the ratings, 7.2x the movies).
MOVIE_SCALING_EXPONENT = 0.6
# Floor for tiny twins: no user may rate more than half of the movies, and the mean user rates
# 144, so 600 movies leave room for the heavy users that the per-user curve asks for.
MIN_RATED_MOVIES = 600

GENRES = ("Drama", "Comedy", "Thriller", "Romance", "Action", "Crime", "Horror", "Documentary",
          "Adventure", "Sci-Fi", "Mystery", "Fantasy", "War", "Children", "Musical", "Animation",
          "Western", "Film-Noir", "IMAX")
# Share of ML-20M movies carrying each genre (approximate), used as independent draw rates.
GENRE_RATES = np.array([0.48, 0.31, 0.15, 0.15, 0.13, 0.10, 0.10, 0.09, 0.08, 0.06, 0.06, 0.05,
                        0.04, 0.04, 0.04, 0.04, 0.025, 0.012, 0.007])
_ADJECTIVES = ("Silent", "Last", "Broken", "Golden", "Hidden", "Midnight", "Crimson", "Lost",
               "Wild", "Distant", "Electric", "Frozen", "Secret", "Burning", "Quiet", "Lonely",
               "Savage", "Bright", "Dark", "Endless", "Little", "Final", "Iron", "Velvet")
_NOUNS = ("River", "City", "Garden", "Letter", "Empire", "Summer", "Road", "Station", "Island",
          "Mirror", "Dream", "Harbor", "Kingdom", "Storm", "Promise", "Orchard", "Frontier",
          "Machine", "Heart", "Shadow", "Canyon", "Winter", "Detective", "Signal", "Voyage")


@dataclass(frozen=True)
class Twin:
    ratings: pd.DataFrame  # userId, movieId, rating, timestamp
    movies: pd.DataFrame  # movieId, title, genres


def sizes(n_ratings: int) -> tuple[int, int, int]:
    """Numbers of users, rated movies and listed movies for a twin of ``n_ratings``."""
    scale = n_ratings / ML20M_RATINGS
    n_users = max(1, round(n_ratings / ML20M_MEAN_PER_USER))
    n_rated = max(MIN_RATED_MOVIES, round(ML20M_RATED_MOVIES * scale**MOVIE_SCALING_EXPONENT))
    n_listed = max(n_rated, round(ML20M_LISTED_MOVIES * scale**MOVIE_SCALING_EXPONENT))
    return n_users, n_rated, n_listed


def sample_quantile_curve(rng: np.random.Generator, curve: tuple[list, list], n: int) -> np.ndarray:
    """Draws ``n`` values from a distribution given by log-linearly interpolated quantiles."""
    probs, values = curve
    return np.exp(np.interp(rng.random(n), probs, np.log(values)))


def user_counts(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int) -> np.ndarray:
    """Ratings per user: >= 20 each, at most ``cap``, summing exactly to ``n_ratings``."""
    if not n_users * MIN_RATINGS_PER_USER <= n_ratings <= n_users * cap:
        raise ValueError(f"n_ratings={n_ratings} cannot be split among {n_users} users with "
                         f"{MIN_RATINGS_PER_USER} to {cap} ratings each")
    raw = np.minimum(sample_quantile_curve(rng, USER_QUANTILES, n_users), cap)
    # Scale the part above the minimum so that the total is exact, then hand out the rounding
    # remainder one rating at a time to users below the cap.
    extra = raw - MIN_RATINGS_PER_USER
    budget = n_ratings - MIN_RATINGS_PER_USER * n_users
    counts = MIN_RATINGS_PER_USER + np.floor(extra * budget / max(extra.sum(), 1e-9))
    counts = np.minimum(counts, cap).astype(np.int64)
    while (short := n_ratings - int(counts.sum())) != 0:
        room = np.flatnonzero(counts < cap) if short > 0 else np.flatnonzero(
            counts > MIN_RATINGS_PER_USER)
        pick = rng.choice(room, size=min(abs(short), len(room)), replace=False)
        counts[pick] += 1 if short > 0 else -1
    return counts


def assign_movies(rng: np.random.Generator, users: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Draws a movie for each rating of ``users`` (user per rating, grouped), in proportion to
    ``weights``, so that no user rates a movie twice.

    Draws every rating's movie at once, then redraws only the (user, movie) pairs that came up
    twice until none is left; after a few popularity-weighted rounds the leftovers (heavy users
    who have already seen most popular movies) are drawn uniformly, which always converges
    because no user may rate more than half of the movies.
    """
    n_movies = len(weights)
    p = weights / weights.sum()
    movies = rng.choice(n_movies, size=len(users), p=p)
    for round_ in range(200):
        keys = users * n_movies + movies
        order = np.argsort(keys, kind="stable")
        dup = np.zeros(len(keys), dtype=bool)
        dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
        n_dup = int(dup.sum())
        if n_dup == 0:
            return movies
        if round_ < 8:
            movies[dup] = rng.choice(n_movies, size=n_dup, p=p)
        else:
            movies[dup] = rng.integers(0, n_movies, size=n_dup)
    raise RuntimeError("could not draw distinct movies per user")  # pragma: no cover


def movie_table(rng: np.random.Generator, n_listed: int, max_id: float) -> pd.DataFrame:
    """Sparse sorted movieIds, release years, titles and genres."""
    id_range = max(n_listed, int(max_id))
    ids = np.sort(rng.choice(np.arange(1, id_range + 1), size=n_listed, replace=False))
    # Release years skew recent, as in MovieLens (median around 1995); ids grow with time.
    years = np.sort(np.clip(np.round(2016 - rng.gamma(1.6, 14.0, n_listed)), 1902, 2015))
    years = years.astype(int)
    genres = rng.random((n_listed, len(GENRES))) < GENRE_RATES
    none = ~genres.any(axis=1)
    genres[none, 0] = rng.random(int(none.sum())) < 0.8  # most movies have some genre
    adj = rng.integers(0, len(_ADJECTIVES), n_listed)
    noun = rng.integers(0, len(_NOUNS), n_listed)
    form = rng.random(n_listed)
    titles = []
    genre_names = []
    for i in range(n_listed):
        # Per-movie string building: tens of thousands of rows at most, not per rating.
        a, n = _ADJECTIVES[adj[i]], _NOUNS[noun[i]]
        if form[i] < 0.45:
            base = f"The {a} {n}"
        elif form[i] < 0.8:
            base = f"{a} {n}"
        else:
            base = f"{n} of the {a} {_NOUNS[(noun[i] + 7) % len(_NOUNS)]}"
        titles.append(f"{base} ({years[i]})")
        names = [g for g, on in zip(GENRES, genres[i], strict=True) if on]
        genre_names.append("|".join(names) if names else "(no genres listed)")
    return pd.DataFrame({MOVIE_COL: ids.astype("int32"), TITLE_COL: titles,
                         GENRES_COL: genre_names, "_year": years, "_genres": list(genres)})


def planted_scores(rng: np.random.Generator, users: np.ndarray, movies: np.ndarray,
                   n_users: int, genre_matrix: np.ndarray, popularity: np.ndarray,
                   years: np.ndarray) -> np.ndarray:
    """A continuous preference score per rating: biases + factors + era taste + noise.

    The components' sizes are chosen so that, after the mapping onto stars, a perfect model of
    the structure would reach an MSE of roughly 0.55 against the global mean's ~1.1, about the
    gap that good models reach on the real ML-20M.
    """
    dim = 8
    user_bias = rng.normal(0.0, 0.40, n_users)
    # Popular movies are rated higher on MovieLens; tie movie bias partly to popularity.
    log_pop = np.log(popularity)
    pop_z = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-9)
    movie_bias = 0.20 * pop_z + rng.normal(0.0, 0.40, len(popularity))
    # Movie factors: a genre-driven part plus an individual part.
    genre_factors = rng.normal(0.0, 1.0, (genre_matrix.shape[1], dim))
    n_genres = np.maximum(genre_matrix.sum(axis=1, keepdims=True), 1)
    movie_f = ((genre_matrix @ genre_factors) / np.sqrt(n_genres)
               + rng.normal(0.0, 0.7, (len(years), dim)))
    user_f = rng.normal(0.0, 1.0, (n_users, dim))
    scale = 0.55 / np.sqrt(dim * (1.0 + 0.49))  # sd of the dot product ~0.55
    dot = np.einsum("ij,ij->i", user_f[users], movie_f[movies]) * scale
    # Nonlinear part a dot product cannot express: each user prefers movies from a favourite era.
    era_user = rng.uniform(0.0, 1.0, n_users)
    era_movie = (years - years.min()) / max(years.max() - years.min(), 1)
    era = -0.9 * np.abs(era_user[users] - era_movie[movies]) ** 1.5
    era -= era.mean()
    noise = rng.normal(0.0, 0.75, len(users))
    return user_bias[users] + movie_bias[movies] + dot + era + noise


def scores_to_stars(scores: np.ndarray) -> np.ndarray:
    """Maps scores onto half stars by rank so that the histogram is exactly ML-20M's."""
    n = len(scores)
    bounds = np.round(np.cumsum(STAR_COUNTS) / STAR_COUNTS.sum() * n).astype(np.int64)
    order = np.argsort(scores, kind="stable")
    stars = np.empty(n, dtype=np.float32)
    stars[order] = np.repeat(STARS, np.diff(np.concatenate([[0], bounds])))
    return stars


def timestamps(rng: np.random.Generator, users: np.ndarray, n_users: int,
               release_year: np.ndarray) -> np.ndarray:
    """Unix seconds: each user rates in a burst after joining; never before a movie's year."""
    span = LAST_TIMESTAMP - FIRST_TIMESTAMP
    # Sign-ups grow over the years (Beta skewed late), activity lasts hours to years.
    start = FIRST_TIMESTAMP + rng.beta(1.3, 1.0, n_users) * span
    duration = rng.lognormal(np.log(3 * 86_400), 2.5, n_users)
    t = start[users] + rng.random(len(users)) ** 2 * duration[users]
    year_start = (release_year - 1970) * 31_556_952.0  # mean Gregorian year in seconds
    t = np.maximum(t, year_start + rng.random(len(users)) * 180 * 86_400)
    return np.clip(t, FIRST_TIMESTAMP, LAST_TIMESTAMP).astype(np.int64)


def generate(n_ratings: int = 1_000_000, seed: int = 42) -> Twin:
    """Generates the twin: the same ``n_ratings`` and ``seed`` give the same tables."""
    rng = np.random.default_rng(seed)
    n_users, n_rated, n_listed = sizes(n_ratings)
    movies = movie_table(rng, n_listed,
                         ML20M_MAX_MOVIE_ID * n_listed / ML20M_LISTED_MOVIES)
    # Which listed movies can be rated at all, and how popular each one is.
    rated = np.sort(rng.choice(n_listed, size=n_rated, replace=False))
    popularity = sample_quantile_curve(rng, MOVIE_QUANTILES, n_rated)
    cap = max(MIN_RATINGS_PER_USER, n_rated // 2)
    counts = user_counts(rng, n_users, n_ratings, cap)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    movie_pos = assign_movies(rng, users, popularity)
    genre_matrix = np.stack(movies["_genres"].to_numpy())[rated].astype(np.float64)
    years = movies["_year"].to_numpy()[rated]
    scores = planted_scores(rng, users, movie_pos, n_users, genre_matrix, popularity, years)
    ratings = pd.DataFrame({
        USER_COL: (users + 1).astype("int32"),  # MovieLens userIds are 1..N
        MOVIE_COL: movies[MOVIE_COL].to_numpy()[rated][movie_pos],
        RATING_COL: scores_to_stars(scores),
        TIMESTAMP_COL: timestamps(rng, users, n_users, years[movie_pos]),
    })
    # MovieLens files are sorted by user, then movie.
    ratings = ratings.sort_values([USER_COL, MOVIE_COL], kind="stable", ignore_index=True)
    return Twin(ratings=ratings, movies=movies[[MOVIE_COL, TITLE_COL, GENRES_COL]].copy())
