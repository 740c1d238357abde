"""Parsing every MovieLens ratings and movies layout into the canonical tables.

Ratings: GroupLens ``ratings.csv`` (header, Unix seconds), the Kaggle copy of ML-20M
(``rating.csv``: quoted header, timestamps as UTC datetime strings), ``::``-separated
``ratings.dat`` (ML-1M, ML-10M) and tab-separated ``u.data`` (ML-100K). Movies: ``movies.csv``,
``movies.dat`` and ``u.item``. Plain files and release zips are told apart by their bytes.

Parsing is done by pyarrow's multithreaded CSV reader straight from the file or the zip member;
``::`` is read as ``:`` with an empty column between fields, since pyarrow takes one-byte
delimiters only.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from movierec.core.columns import (
    GENRES_COL,
    MOVIE_COL,
    MOVIES_COLUMNS,
    NO_GENRES,
    RATING_COL,
    RATINGS_COLUMNS,
    TIMESTAMP_COL,
    USER_COL,
)
from movierec.core.errors import DataError
from movierec.data.tables import placeholder_movies, validate_ratings

FORMATS = ("csv", "kaggle", "dat", "udata")
FORMAT_NAMES = {
    "csv": "GroupLens ratings.csv (userId,movieId,rating,timestamp)",
    "kaggle": "Kaggle rating.csv (timestamps as datetime strings)",
    "dat": "ratings.dat (UserID::MovieID::Rating::Timestamp)",
    "udata": "u.data (tab-separated user, item, rating, timestamp)",
}
EXPECTED_FORMATS = ("a GroupLens ratings.csv, a Kaggle rating.csv, a ratings.dat, a u.data "
                    "or a MovieLens release zip")
# ML-100K's u.item genre flags, in file order.
UITEM_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western")
# Ratings file name -> its layout ("csv" covers GroupLens and Kaggle, told apart by the bytes).
RATINGS_FILES = {"ratings.csv": "csv", "rating.csv": "csv", "ratings.dat": "dat", "u.data": "udata"}
# Ratings file name -> movies file in the same folder, and its layout.
MOVIES_BESIDE = {"ratings.csv": ("movies.csv", "csv"), "rating.csv": ("movie.csv", "csv"),
                 "ratings.dat": ("movies.dat", "dat"), "u.data": ("u.item", "uitem")}
# The same, for a plain file under any name: by the layout its bytes showed.
MOVIES_FOR_FORMAT = {"csv": MOVIES_BESIDE["ratings.csv"], "kaggle": MOVIES_BESIDE["rating.csv"],
                     "dat": MOVIES_BESIDE["ratings.dat"], "udata": MOVIES_BESIDE["u.data"]}
SNIFF_BYTES = 1 << 16
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Source:
    """Where a ratings table was read from, for log lines and errors."""

    name: str  # file, or zip!member
    format: str


def _int_ids_and_rating() -> dict:
    # Parsed straight into the canonical widths (20 bytes a rating): no wide intermediate copy.
    # float32 holds every half star exactly; ids beyond int32 fail with a conversion error.
    return {USER_COL: pa.int32(), MOVIE_COL: pa.int32(), RATING_COL: pa.float32()}


def sniff_format(head: bytes, name: str) -> str:
    """Tells the ratings layout from the first bytes of a file."""
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if b"\x00" in head:
        raise DataError(f"{name}: binary data (expected {EXPECTED_FORMATS})")
    lines = head.decode("utf-8", errors="replace").splitlines()
    if not lines or not lines[0].strip():
        raise DataError(f"{name}: empty file (expected {EXPECTED_FORMATS})")
    first = lines[0].strip()
    if "::" in first:
        return "dat"
    if "\t" in first and len(first.split("\t")) == 4:
        return "udata"
    header = [c.strip().strip('"') for c in first.split(",")]
    if header[:4] == list(RATINGS_COLUMNS) or set(RATINGS_COLUMNS) <= set(header):
        fields = lines[1].split(",") if len(lines) > 1 else []
        position = header.index(TIMESTAMP_COL)
        if len(fields) > position:
            stamp = fields[position].strip().strip('"')
            if "-" in stamp and ":" in stamp:
                return "kaggle"
        return "csv"
    raise DataError(f"{name}: first line {first[:80]!r} is not a known ratings layout "
                    f"(expected {EXPECTED_FORMATS})")


def _read_table(stream: BinaryIO | str, name: str, read: pacsv.ReadOptions,
                parse: pacsv.ParseOptions, convert: pacsv.ConvertOptions,
                columns: list[str]) -> pa.Table:
    """pyarrow's CSV reader, its errors turned into one line that names the column."""
    try:
        return pacsv.read_csv(stream, read_options=read, parse_options=parse,
                              convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first = str(exc).splitlines()[0]
        found = re.search(r"In CSV column #(\d+): ", first)
        if found and int(found.group(1)) < len(columns):
            first = first.replace(found.group(0), f"column {columns[int(found.group(1))]}: ")
        row = re.search(r"Expected \d+ columns, got \d+: (.*)$", first)
        line = _line_number(stream, row.group(1)) if row and isinstance(stream, str) else None
        if line is not None:
            first = f"line {line}: {first}"
        raise DataError(f"{name}: {first} (expected integer userId and movieId, a numeric "
                        "rating and a timestamp on every row)") from None


def _line_number(path: str, text: str) -> int | None:
    """The first line of ``path`` that reads ``text`` (pyarrow quotes a bad row, not its
    number); None if none does, e.g. when pyarrow shortened it. Only runs on the error path."""
    target = text.rstrip("\r")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if raw.decode("utf-8", errors="replace").rstrip("\r\n") == target:
                return number
    return None


def _header_of(stream: BinaryIO | str) -> list[str]:
    """The column names on the first line, without consuming the stream."""
    if isinstance(stream, str):
        with open(stream, "rb") as fh:
            head = fh.readline()
    else:
        head = stream.peek(SNIFF_BYTES).split(b"\n", 1)[0]
    return [c.strip().strip('"') for c in head.decode("utf-8", errors="replace").split(",")]


def parse_ratings(stream: BinaryIO | str, fmt: str, name: str) -> pd.DataFrame:
    """Parses one ratings file in layout ``fmt`` into the canonical table (validated)."""
    read = pacsv.ReadOptions(block_size=1 << 24)
    if fmt in ("csv", "kaggle"):
        types = _int_ids_and_rating()
        types[TIMESTAMP_COL] = pa.timestamp("s") if fmt == "kaggle" else pa.int64()
        convert = pacsv.ConvertOptions(column_types=types, include_columns=list(RATINGS_COLUMNS))
        table = _read_table(stream, name, read, pacsv.ParseOptions(), convert,
                            _header_of(stream))
        if fmt == "kaggle":
            stamps = table.column(TIMESTAMP_COL).cast(pa.int64())
            table = table.set_column(table.column_names.index(TIMESTAMP_COL), TIMESTAMP_COL,
                                     stamps)
    elif fmt == "dat":
        # "1::122::5::838985046" read with ':' gives the four fields and three empty columns.
        names = [USER_COL, "_a", MOVIE_COL, "_b", RATING_COL, "_c", TIMESTAMP_COL]
        read = pacsv.ReadOptions(block_size=1 << 24, column_names=names)
        types = {**_int_ids_and_rating(), TIMESTAMP_COL: pa.int64()}
        types.update({c: pa.string() for c in ("_a", "_b", "_c")})
        convert = pacsv.ConvertOptions(column_types=types)
        table = _read_table(stream, name, read, pacsv.ParseOptions(delimiter=":"), convert,
                            names)
        for col in ("_a", "_b", "_c"):
            nonempty = pc.sum(pc.not_equal(pc.utf8_length(table.column(col)), 0)).as_py()
            if nonempty:
                raise DataError(f"{name}: fields not separated by '::' (expected "
                                f"{FORMAT_NAMES['dat']})")
        table = table.select(list(RATINGS_COLUMNS))
    elif fmt == "udata":
        read = pacsv.ReadOptions(block_size=1 << 24, column_names=list(RATINGS_COLUMNS))
        types = {**_int_ids_and_rating(), TIMESTAMP_COL: pa.int64()}
        table = _read_table(stream, name, read, pacsv.ParseOptions(delimiter="\t"),
                            pacsv.ConvertOptions(column_types=types), list(RATINGS_COLUMNS))
    else:
        raise ValueError(f"unknown ratings format {fmt!r} (expected one of {FORMATS})")
    # self_destruct frees each Arrow column as soon as pandas has it, so the peak is about one
    # copy of the table, not an Arrow and a pandas copy side by side.
    return validate_ratings(table.to_pandas(split_blocks=True, self_destruct=True), name)


def _decode(raw: bytes, encoding: str, name: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        if encoding != "latin-1":
            return raw.decode("latin-1")  # ML-10M's movies.dat: UTF-8 with latin-1 stragglers
        raise DataError(f"{name}: not decodable as {encoding}") from None


def parse_movies(raw: bytes, fmt: str, name: str, encoding: str = "utf-8") -> pd.DataFrame:
    """Parses a movies file (``csv``, ``dat`` or ``uitem``) into movieId, title, genres."""
    text = _decode(raw, encoding, name)
    if fmt == "csv":
        try:
            df = pd.read_csv(io.StringIO(text), dtype={MOVIE_COL: "int64"}, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{name}: {str(exc).splitlines()[0]} "
                            "(expected movieId,title,genres)") from None
        missing = [c for c in MOVIES_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {', '.join(missing)} "
                            "(expected movieId,title,genres)")
        df = df[list(MOVIES_COLUMNS)]
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if fmt == "dat":
                fields = line.split("::")
                ok = len(fields) == 3 and fields[0].strip().isdigit()
                row = (fields[0], fields[1], fields[2]) if ok else None
            else:  # uitem: id|title|date|video date|url|19 genre flags
                fields = line.split("|")
                ok = len(fields) == 5 + len(UITEM_GENRES) and fields[0].strip().isdigit()
                flags = fields[5:] if ok else []
                genres = "|".join(g for g, f in zip(UITEM_GENRES, flags, strict=False)
                                  if f.strip() == "1" and g != "unknown")
                row = (fields[0], fields[1], genres or NO_GENRES) if ok else None
            if row is None:
                layout = "MovieID::Title::Genres" if fmt == "dat" else "u.item's 24 |-fields"
                raise DataError(f"{name}: line {number}: {line[:80]!r} (expected {layout})")
            rows.append((int(row[0]), row[1], row[2]))
        df = pd.DataFrame(rows, columns=list(MOVIES_COLUMNS))
    df[MOVIE_COL] = df[MOVIE_COL].astype("int32")
    df[GENRES_COL] = df[GENRES_COL].replace("", NO_GENRES)
    return df.drop_duplicates(MOVIE_COL, keep="first").reset_index(drop=True)


def _check_member_names(zf: zipfile.ZipFile, name: str) -> None:
    """Refuses archives whose member paths would escape a folder they were extracted to."""
    for info in zf.infolist():
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise DataError(f"{name}: member {info.filename!r} escapes the archive's folder "
                            "(refusing the whole archive)")


def find_ratings_member(zf: zipfile.ZipFile, name: str) -> tuple[str, str]:
    """The ratings member of a release zip and its layout (ignores u1.base and friends)."""
    for info in zf.infolist():
        base = PurePosixPath(info.filename).name
        if base in RATINGS_FILES and not info.is_dir():
            return info.filename, RATINGS_FILES[base]
    raise DataError(f"{name}: no ratings.csv, rating.csv, ratings.dat or u.data inside "
                    f"(expected {EXPECTED_FORMATS})")


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip ({exc})") from None
    _check_member_names(zf, str(path))
    return zf


def read_zip(path: str | Path, ratings_member: str | None = None,
             ratings_format: str | None = None, movies_member: str | None = None,
             movies_format: str | None = None,
             movies_encoding: str = "utf-8") -> tuple[pd.DataFrame, pd.DataFrame, Source]:
    """Reads ratings (and movies, when present) straight from a release zip."""
    path = Path(path)
    with _open_zip(path) as zf:
        if ratings_member is None:
            ratings_member, ratings_format = find_ratings_member(zf, str(path))
        where = f"{path}!{ratings_member}"
        try:
            with zf.open(ratings_member) as member:
                if ratings_format == "csv":  # GroupLens or Kaggle: tell by the bytes
                    ratings_format = sniff_format(member.read(SNIFF_BYTES), where)
                with zf.open(ratings_member) as stream:
                    ratings = parse_ratings(stream, ratings_format, where)
            if movies_member is None:
                base = PurePosixPath(ratings_member)
                beside, movies_format = MOVIES_BESIDE[base.name]
                movies_member = str(base.with_name(beside))
            if movies_member in zf.namelist():
                movies = parse_movies(zf.read(movies_member), movies_format,
                                      f"{path}!{movies_member}", movies_encoding)
            else:
                movies = placeholder_movies(ratings[MOVIE_COL].to_numpy())
        except KeyError as exc:
            raise DataError(f"{path}: member {exc} missing (expected the release's layout)"
                            ) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DataError(f"{path}: corrupt zip ({exc})") from None
    return ratings, complete_movies(movies, ratings), Source(where, ratings_format)


def complete_movies(movies: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    """Adds a placeholder row for each rated movie that the movies file does not list."""
    rated = np.unique(ratings[MOVIE_COL].to_numpy())
    unknown = rated[~np.isin(rated, movies[MOVIE_COL].to_numpy())]
    if len(unknown) == 0:
        return movies
    return pd.concat([movies, placeholder_movies(unknown)], ignore_index=True)


def read_ratings_path(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, Source]:
    """Reads any supported ratings file or release zip, telling its layout from its bytes."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder (expected {EXPECTED_FORMATS})")
    if not path.is_file():
        raise DataError(f"{path}: not found (expected {EXPECTED_FORMATS})")
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    fmt = sniff_format(head, str(path))
    if fmt == "zip":
        return read_zip(path)
    ratings = parse_ratings(str(path), fmt, str(path))
    beside_name, movies_fmt = MOVIES_BESIDE.get(path.name, MOVIES_FOR_FORMAT[fmt])
    beside = path.with_name(beside_name)
    if beside.is_file() and beside != path:
        encoding = "latin-1" if movies_fmt == "uitem" else "utf-8"
        movies = parse_movies(beside.read_bytes(), movies_fmt, str(beside), encoding)
    else:
        movies = placeholder_movies(ratings[MOVIE_COL].to_numpy())
    return ratings, complete_movies(movies, ratings), Source(str(path), fmt)
