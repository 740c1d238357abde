"""Column names and rating scale, defined once for every stage."""

USER_COL = "userId"
MOVIE_COL = "movieId"
RATING_COL = "rating"
TIMESTAMP_COL = "timestamp"
TITLE_COL = "title"
GENRES_COL = "genres"

# Contiguous indices written by preprocess and read by the model.
USER_IDX_COL = "user_idx"
MOVIE_IDX_COL = "movie_idx"

RATINGS_COLUMNS = (USER_COL, MOVIE_COL, RATING_COL, TIMESTAMP_COL)
MOVIES_COLUMNS = (MOVIE_COL, TITLE_COL, GENRES_COL)

# MovieLens scale since ML-10M: half stars from 0.5 to 5.0 (older releases use whole stars).
RATING_MIN = 0.5
RATING_MAX = 5.0
RATING_STEP = 0.5

NO_GENRES = "(no genres listed)"  # MovieLens' own spelling for a movie without genres
