"""An offline, deterministic twin of MovieLens 20M.

The twin copies the shape of ML-20M as GroupLens publishes it
(https://grouplens.org/datasets/movielens/): the half-star histogram, at least 20 ratings per
user, a long-tailed number of ratings per movie, sparse movieIds and timestamps between 1995
and 2015. Ratings come from a planted structure (user and movie biases, latent factors tied to
genres, a nonlinear "era" taste and noise), so a model has something real to learn, then are
mapped by rank onto the ML-20M histogram.

Which movies a user rates is planted too, by the same latent factors: as on MovieLens, people
rate what they tend to like (ratings are missing not at random). Every user belongs to one of
``TASTE_GROUPS`` taste groups, and a user's factor is their group's centroid plus individual
noise. Group c draws its movies with weights ``popularity(m) * v(m) * exp(SELECTION_BETA *
affinity(c, m))``, the affinity being the scaled dot product of the centroid and the movie's
factor (it fades out for the few movies that nearly every user rates), and ``v(m)`` a
per-movie correction, fitted by Sinkhorn scaling, that keeps each movie's share of all draws
equal to its share of popularity, so the per-movie count curve stays the one the popularity
curve asks for. Draws are without repeats per user: repeated (user, movie) pairs are redrawn
from the group's weights, and the last few leftovers of heavy users uniformly. Who rated what
thus carries a personal signal that a ranking model can learn (a most-popular list is not the
best ranking, as it would be if choices followed popularity alone), while the ratings' scores
use each user's own factor, so users also rate higher what their group leans to.
``Twin.tastes`` keeps the groups and the weights: the oracle that tests can compare a model
with.

Everything is vectorised: no Python loop runs over ratings or users, so the full-size twin
(20M ratings) costs array operations only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from movierec.core.columns import (
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

# Planted tastes: latent factors of FACTOR_DIM dimensions; users fall into TASTE_GROUPS groups,
# and GROUP_SHARE of each user's factor variance is their group's centroid. SELECTION_BETA sets
# how strongly a group's movie choice leans to its taste: chosen so that ranking each user's
# unseen movies by their group's weights beats a most-popular list in precision@10 clearly but
# moderately, as personalised recommenders beat popularity on the real MovieLens (Microsoft
# Recommenders' MovieLens benchmark); tests/data/test_synthetic.py holds a 200k twin's oracle
# between 1.3x and 2x the most-popular list's. The gap grows with the catalogue.
FACTOR_DIM = 8
TASTE_GROUPS = 64
GROUP_SHARE = 0.5
SELECTION_BETA = 1.5
# The taste fades out for the movies that nearly every user rates (see selection_weights).
REACH_POWER = 8
# Rounds of redraws from the taste weights before the leftovers (heavy users who have seen
# most of their group's favourites) are drawn uniformly. Uniform leftovers flatten the tail of
# the per-movie count curve, and taste makes more repeats than popularity alone: 100 rounds
# leave a roughly constant number of leftovers whatever the size, a small share of a small
# twin and a negligible one of the full-size twin.
WEIGHTED_ROUNDS = 100

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
class Tastes:
    """The planted selection model of a twin (MovieLens has no such table): the oracle.

    ``group[u]`` is the taste group of userId ``u + 1``; ``weights[c, j]`` is group c's weight
    for the movie ``movie_ids[j]`` (the movies that can be rated, sorted): a group-c user's
    ratings are drawn in proportion to these weights, without repeats.
    """

    group: np.ndarray  # (n_users,)
    movie_ids: np.ndarray  # (n_rated,)
    weights: np.ndarray  # (TASTE_GROUPS, n_rated)


@dataclass(frozen=True)
class Twin:
    ratings: pd.DataFrame  # userId, movieId, rating, timestamp
    movies: pd.DataFrame  # movieId, title, genres
    tastes: Tastes = field(repr=False, compare=False)


@dataclass(frozen=True)
class Factors:
    """Latent factors shared by the choice of movies and the ratings' scores."""

    user: np.ndarray  # (n_users, FACTOR_DIM): the group's centroid plus individual noise
    movie: np.ndarray  # (n_rated, FACTOR_DIM): a genre-driven part plus an individual part
    group: np.ndarray  # (n_users,): taste group of each user
    centroid: np.ndarray  # (TASTE_GROUPS, FACTOR_DIM)


# Movie factors have variance 1 (genre part) + 0.49 (individual part) per dimension and user
# factors 1, so this scale gives a dot product of standard deviation about 1.
FACTOR_SCALE = 1.0 / np.sqrt(FACTOR_DIM * (1.0 + 0.49))


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


def latent_factors(rng: np.random.Generator, n_users: int, genre_matrix: np.ndarray) -> Factors:
    """Movie factors (genre part + individual part) and user factors (taste group + own)."""
    genre_factors = rng.normal(0.0, 1.0, (genre_matrix.shape[1], FACTOR_DIM))
    n_genres = np.maximum(genre_matrix.sum(axis=1, keepdims=True), 1)
    movie = ((genre_matrix @ genre_factors) / np.sqrt(n_genres)
             + rng.normal(0.0, 0.7, (len(genre_matrix), FACTOR_DIM)))
    centroid = rng.normal(0.0, 1.0, (TASTE_GROUPS, FACTOR_DIM))
    group = rng.integers(0, TASTE_GROUPS, n_users)
    own = rng.normal(0.0, 1.0, (n_users, FACTOR_DIM))
    user = np.sqrt(GROUP_SHARE) * centroid[group] + np.sqrt(1.0 - GROUP_SHARE) * own
    return Factors(user=user, movie=movie, group=group, centroid=centroid)


def selection_weights(popularity: np.ndarray, factors: Factors, counts: np.ndarray,
                      beta: float = SELECTION_BETA) -> np.ndarray:
    """Each taste group's draw probabilities over the movies:
    ``popularity * v * exp(beta * (1 - reach**REACH_POWER) * affinity)``, normalised per group.

    The affinity is the scaled dot product of the group's centroid and the movie's factor (sd
    about 1). ``reach`` is the share of users who would rate the movie if every user's
    ``counts`` were drawn from ``popularity`` alone: a movie that nearly every user rates cannot
    depend much on taste (and a group that loved it would only draw it again and again), so
    the taste fades out for the few most popular movies. ``v`` (one number per movie) is
    fitted by Sinkhorn scaling so that, over all groups weighted by their numbers of ratings,
    each movie's share of the draws stays its share of ``popularity``: the taste reorders the
    movies within each group but keeps the per-movie count curve.
    """
    share = popularity / popularity.sum()
    # reach: the mean over users of 1 - (1 - p)**count, tabulated on a grid of log p and
    # interpolated as log reach (nearly linear in log p).
    log_grid = np.linspace(np.log(1e-14), np.log(0.5), 300)
    log_reach = np.log([-np.expm1(counts * m).mean() for m in np.log1p(-np.exp(log_grid))])
    reach = np.exp(np.interp(np.log(share), log_grid, log_reach))
    affinity = factors.centroid @ factors.movie.T * FACTOR_SCALE
    tilted = popularity * np.exp(beta * (1.0 - reach**REACH_POWER) * affinity)
    per_group = np.bincount(factors.group, weights=counts, minlength=len(factors.centroid))
    draws = per_group / per_group.sum()
    v = np.ones(len(popularity))
    for _ in range(100):  # a cap far above what the scaling needs to converge
        weights = tilted * v
        weights /= weights.sum(axis=1, keepdims=True)
        ratio = share / (draws @ weights)
        if np.abs(ratio - 1.0).max() < 1e-6:
            break
        v *= ratio
    return weights


def assign_movies(rng: np.random.Generator, counts: np.ndarray, group: np.ndarray,
                  weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``counts[u]`` distinct movies for each user u, in proportion to the weights of the
    user's taste group (``weights[group[u]]``); returns (user, movie) per rating, sorted by
    user, then movie.

    Draws every rating's movie at once, then redraws only the (user, movie) pairs that came up
    twice until none is left; after ``WEIGHTED_ROUNDS`` weighted rounds the leftovers (heavy
    users who have already seen most of their group's favourites) are drawn uniformly, which
    always converges because no user may rate more than half of the movies. Works on sorted
    (user, movie) keys: only the redraws are checked against them, not every rating again.
    """
    n_groups, n_movies = weights.shape
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]  # the last entry is exactly 1, so a draw in [0, 1) stays in range

    def draw(users: np.ndarray) -> np.ndarray:
        """A movie per entry of ``users`` (sorted by group), from the group's weights."""
        edges = np.searchsorted(group[users], np.arange(n_groups + 1))
        movies = np.empty(len(users), dtype=np.int64)
        for c in range(n_groups):  # per group: its cdf stays in cache
            lo, hi = edges[c], edges[c + 1]
            if hi > lo:
                movies[lo:hi] = np.searchsorted(cdf[c], rng.random(hi - lo), side="right")
        return movies

    by_group = np.argsort(group, kind="stable")
    users = np.repeat(by_group, counts[by_group])
    keys = np.sort(users * n_movies + draw(users))
    repeat = keys[1:] == keys[:-1]
    pending = keys[1:][repeat] // n_movies  # the user of each repeated draw
    taken = keys[np.concatenate([[True], ~repeat])]  # sorted, distinct (user, movie) keys
    redrawn = np.empty(0, dtype=np.int64)  # the same for the redraws, kept apart: it is small
    for round_ in range(WEIGHTED_ROUNDS + 200):
        if len(pending) == 0:
            keys = np.insert(taken, np.searchsorted(taken, redrawn), redrawn)
            return keys // n_movies, keys % n_movies
        if round_ < WEIGHTED_ROUNDS:
            pending = pending[np.argsort(group[pending], kind="stable")]
            new = pending * n_movies + draw(pending)
        else:
            new = pending * n_movies + rng.integers(0, n_movies, len(pending))
        clash = np.zeros(len(new), dtype=bool)
        for seen in (taken, redrawn):
            if len(seen):
                clash |= seen[np.minimum(np.searchsorted(seen, new), len(seen) - 1)] == new
        order = np.argsort(new, kind="stable")
        clash[order[1:]] |= new[order[1:]] == new[order[:-1]]  # drawn twice in this round
        add = np.sort(new[~clash])
        redrawn = np.insert(redrawn, np.searchsorted(redrawn, add), add)
        pending = pending[clash]
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
                   factors: Factors, popularity: np.ndarray, years: np.ndarray) -> np.ndarray:
    """A continuous preference score per rating: biases + factors + era taste + noise.

    The components' sizes are chosen so that, after the mapping onto stars, a perfect model of
    the structure would reach an MSE of roughly 0.55 against the global mean's ~1.1, about the
    gap that good models reach on the real ML-20M. The factor term uses each user's own factor
    (their taste group's centroid plus individual noise).
    """
    n_users = len(factors.user)
    user_bias = rng.normal(0.0, 0.40, n_users)
    # Popular movies are rated higher on MovieLens; tie movie bias partly to popularity.
    log_pop = np.log(popularity)
    pop_z = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-9)
    movie_bias = 0.20 * pop_z + rng.normal(0.0, 0.40, len(popularity))
    dot = np.zeros(len(users))
    for k in range(FACTOR_DIM):  # column by column: no (n_ratings, FACTOR_DIM) temporaries
        dot += factors.user[:, k][users] * factors.movie[:, k][movies]
    dot *= 0.55 * FACTOR_SCALE  # sd of the dot product ~0.55
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
    genre_matrix = np.stack(movies["_genres"].to_numpy())[rated].astype(np.float64)
    years = movies["_year"].to_numpy()[rated]
    factors = latent_factors(rng, n_users, genre_matrix)
    weights = selection_weights(popularity, factors, counts)
    # Sorted by user, then movie (movieIds grow with the position in ``rated``), as the
    # MovieLens files are.
    users, movie_pos = assign_movies(rng, counts, factors.group, weights)
    scores = planted_scores(rng, users, movie_pos, factors, popularity, years)
    movie_ids = movies[MOVIE_COL].to_numpy()[rated]
    ratings = pd.DataFrame({
        USER_COL: (users + 1).astype("int32"),  # MovieLens userIds are 1..N
        MOVIE_COL: movie_ids[movie_pos],
        RATING_COL: scores_to_stars(scores),
        TIMESTAMP_COL: timestamps(rng, users, n_users, years[movie_pos]),
    })
    return Twin(ratings=ratings, movies=movies[[MOVIE_COL, TITLE_COL, GENRES_COL]].copy(),
                tastes=Tastes(group=factors.group, movie_ids=movie_ids, weights=weights))
