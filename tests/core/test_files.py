import pandas as pd
import pytest

from movierec.core.config import DataParams
from movierec.core.errors import DataError
from movierec.core.files import atomic_path, write_parquet
from movierec.data.ingest import load_dataset
from movierec.data.readers import read_ratings_path


def write(path, text):
    path.write_text(text)
    return path


def test_reads_grouplens_ratings_csv(tmp_path):
    f = write(tmp_path / "ratings.csv",
              "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n")
    df, _, source = read_ratings_path(f)
    assert source.format == "csv"
    assert df.to_dict("list") == {"userId": [1, 1], "movieId": [2, 29], "rating": [3.5, 3.5],
                                  "timestamp": [1112486027, 1112484676]}
    assert str(df.dtypes["userId"]) == "int32"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty file"),
        ("user,item,rating,timestamp\n1,2,3,4\n", "is not a known ratings layout"),
        ("userId,movieId,rating,timestamp\n1,2,7.0,5\n", "row 1, column rating: value 7.0"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,5\n1,3,3.25,6\n", "row 2, column rating"),
        ("userId,movieId,rating,timestamp\nx,2,3.5,5\n", "userId"),
        ("userId,movieId,rating,timestamp\n1,2,3.5\n", "Expected 4 columns, got 3"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,5,9\n", "line 2: CSV parse error: Expected 4"),
        ("userId,movieId,rating,timestamp\n1,2,nan,5\n", "row 1, column rating: missing value"),
        ("1\t2\t3\t4\n5\t6\t7\t8\n", "row 2, column rating: value 7.0"),
        ("1::2::3::4\n1::2::3\n", "line 2: CSV parse error: Expected 7 columns, got 5"),
        ("userId,movieId,rating,timestamp\n1,2,3.5,5\n1,2,3", "Expected 4 columns, got 3"),
        ("userId,movieId,rating,timestamp\n1,2,,5\n", "missing value"),
    ],
)
def test_bad_ratings_files_get_one_line_errors(tmp_path, text, fragment):
    f = write(tmp_path / "ratings.csv", text)
    with pytest.raises(DataError) as info:
        read_ratings_path(f)
    assert fragment in str(info.value)
    assert str(f) in str(info.value)
    assert "\n" not in str(info.value)


def test_movies_csv_beside_the_ratings_supplies_titles(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4.0,1\n1,9,2.0,2\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n2,"Jumanji (1995)",Adventure|Children\n')
    ratings, movies, _ = read_ratings_path(tmp_path / "ratings.csv")
    assert len(ratings) == 2
    titles = dict(zip(movies.movieId, movies.title, strict=True))
    assert titles == {2: "Jumanji (1995)", 9: "Movie 9"}


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    assert pd.read_parquet(target)["a"].tolist() == [1]  # the previous output survives


def test_repeated_pairs_keep_the_last_rating_and_are_counted(tmp_path):
    f = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
              "1,10,4.0,100\n2,10,3.0,101\n1,10,2.5,102\n1,11,5.0,103\n1,10,1.0,104\n")
    ratings, _, note = load_dataset(DataParams(dataset="file", path=str(f)), tmp_path)
    assert ratings.values.tolist() == [[2, 10, 3.0, 101], [1, 11, 5.0, 103], [1, 10, 1.0, 104]]
    assert "dropped 2 repeated (user, movie) rating(s), keeping the last" in note
