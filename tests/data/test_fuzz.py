"""Fuzzing the ratings readers: any input either parses or raises the project's own error."""

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movierec.core.errors import MovieRecError
from movierec.data.readers import read_ratings_path

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
NAMES = ["ratings.csv", "rating.csv", "ratings.dat", "u.data", "mine.txt", "data.zip"]


def _read(name: str, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        try:
            ratings, movies, _ = read_ratings_path(path)
        except MovieRecError as exc:
            message = str(exc)
            assert message and "\n" not in message, message
            return
        # Whatever parses is a valid canonical table.
        assert list(ratings.columns) == ["userId", "movieId", "rating", "timestamp"]
        assert len(ratings) > 0
        assert ratings["rating"].between(0.5, 5.0).all()
        assert not ratings.isna().any().any()
        assert isinstance(movies, pd.DataFrame)


@SETTINGS
@given(name=st.sampled_from(NAMES), raw=st.binary(max_size=600))
def test_random_bytes(name, raw):
    _read(name, raw)


# Near-valid files: a real header and rows whose fields are drawn from good and bad values.
FIELD = st.one_of(
    st.integers(-3, 2**40).map(str),
    st.sampled_from(["0.5", "3.5", "5", "5.0", "7", "-1", "nan", "NaN", "inf", "", " ", "x",
                     "3,5", '"4"', "1e3", "0x10", "2.25", "\uff11"]),
    st.text(max_size=6),
)
ROW = st.lists(FIELD, min_size=2, max_size=6)
LAYOUTS = {",": ("ratings.csv", "userId,movieId,rating,timestamp\n"),
           "::": ("ratings.dat", ""), "\t": ("u.data", "")}


@SETTINGS
@given(sep=st.sampled_from(list(LAYOUTS)), rows=st.lists(ROW, min_size=1, max_size=8),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_near_valid_rows(sep, rows, newline):
    name, header = LAYOUTS[sep]
    text = header.replace("\n", newline) + "".join(sep.join(r) + newline for r in rows)
    _read(name, text.encode("utf-8", errors="surrogatepass"))
