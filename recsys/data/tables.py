"""Generic tabular loaders: delimited text (CSV/TSV/any separator) and Parquet.

"Bring your own data": name the user, item and (optionally) value and timestamp columns, and
optionally a separate test file for a predefined split::

    data = load_table("events.csv", user_col="user", item_col="item", value_col="clicks")
    split = load_table_split("train.tsv", "test.tsv", user_col=0, item_col=1, header=False)

Parsing uses numpy's C reader (``np.loadtxt``), so it is fast; only when that fails does a
line-by-line pass run to find the first bad line and report it precisely. Every problem is a
:class:`~recsys.data.errors.DataError` naming the file, the line and what to fix.

Files are read ``chunk_rows`` lines (Parquet: rows, row group by row group) at a time, in two
passes (ids and row counts first, then the CSR arrays are filled in place; see
:mod:`recsys.data.chunked`), so the raw table and the matrix are never in memory together; the
result and the errors are those of reading the whole file at once (``chunk_rows=None``).

Ids are read as integers when every id in the column is an integer, otherwise as strings
(``id_type="auto"``); force one with ``id_type="int"`` / ``"str"``. Values and timestamps must be
finite numbers (timestamps as numbers, e.g. Unix seconds).
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recsys.data.chunked import IdCounter, build_from_chunks, exact_in_float32
from recsys.data.errors import DataError
from recsys.data.interactions import (
    DUPLICATE_RULES,
    Duplicates,
    Interactions,
    _as_ids,
    unique_sorted,
)
from recsys.data.splits import Split

__all__ = ["DEFAULT_CHUNK_ROWS", "load_table", "load_table_split", "read_columns"]

PathLike = str | os.PathLike[str]
Column = str | int
IdType = Literal["auto", "int", "str"]

_KIND_HELP = {
    "int": "an integer id",
    "id": "an id",
    "float": "a finite number",
    "time": "a numeric timestamp (e.g. Unix seconds)",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column to read: output name, 0-based field index, and kind.

    kind: ``"int"`` (integer id), ``"id"`` (integer if possible, else string), ``"str"`` (string
    id), ``"float"`` (finite number), ``"time"`` (finite number, int64 if all integral).
    """

    name: str
    index: int
    kind: str
    label: str = ""  # how the column is called in messages (header name or position)

    def describe(self) -> str:
        """How messages name the column, e.g. ``'rating' (value)`` or ``column 3 (item)``."""
        label = self.label or f"column {self.index + 1}"
        return label if label.strip("'") == self.name else f"{label} ({self.name})"


# --------------------------------------------------------------------------------------------
# low-level reading
# --------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", path=path, fix="check the path")
    if path.is_dir():
        raise DataError("expected a file but found a folder", path=path, fix="pass the file")
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path=path, fix="check that it was written fully")


def _iter_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) for every line of a text file."""
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        for n, line in enumerate(fh, start=1):
            yield n, line.rstrip("\r\n")


def _split_line(line: str, sep: str | None, quotechar: str | None) -> list[str]:
    if quotechar and sep and len(sep) == 1:
        return next(csv.reader([line], delimiter=sep, quotechar=quotechar))
    return line.split(sep)


def _check_field(value: str, kind: str) -> str | None:
    """None if ``value`` is acceptable for ``kind``, else a description of the problem."""
    v = value.strip()
    if v == "":
        return "is empty"
    if kind == "int":
        try:
            int(v)
        except ValueError:
            return f"is not an integer: {value!r}"
    elif kind in ("float", "time"):
        try:
            x = float(v)
        except ValueError:
            return f"is not a number: {value!r}"
        if not np.isfinite(x):
            return f"is not a finite number: {value!r}"
    return None


def _diagnose(
    path: Path,
    cols: Sequence[ColumnSpec],
    *,
    sep: str | None,
    skip_lines: int,
    encoding: str,
    quotechar: str | None,
    stop_after_row: int | None = None,
) -> DataError | None:
    """Scan line by line for the first line the fast reader would reject (or, with
    ``stop_after_row``, the line of that 0-based data row). Returns the error, or None."""
    need = max(c.index for c in cols) + 1
    sep_name = "whitespace" if sep is None else repr(sep)
    row = -1
    for n, line in _iter_lines(path, encoding):
        if n <= skip_lines or not line.strip():
            continue
        row += 1
        fields = _split_line(line, sep, quotechar)
        if len(fields) < need:
            return DataError(
                f"expected at least {need} fields separated by {sep_name}, found {len(fields)}: "
                f"{line[:80]!r}",
                path=path,
                line=n,
                fix="fix or remove this line (or pass the right separator)",
            )
        for c in cols:
            problem = _check_field(fields[c.index], c.kind)
            if problem:
                return DataError(
                    f"{c.describe()} {problem}; expected {_KIND_HELP.get(c.kind, '')}",
                    path=path,
                    line=n,
                    fix="fix or remove this line",
                )
        if stop_after_row is not None and row >= stop_after_row:
            return None
    return None


def _line_of_row(path: Path, row: int, skip_lines: int, encoding: str) -> int | None:
    """1-based line number of the 0-based data row ``row`` (blank lines are not rows)."""
    r = -1
    for n, line in _iter_lines(path, encoding):
        if n <= skip_lines or not line.strip():
            continue
        r += 1
        if r == row:
            return n
    return None


@dataclass
class _Block:
    """The columns parsed from one block of lines (a whole file or one chunk of it), plus the
    problems found in them that :func:`read_columns` reports only after parsing everything, so a
    chunked read can find and report the same one. Rows are 0-based within the block."""

    columns: dict[str, np.ndarray]
    n_rows: int
    strings: list[ColumnSpec]  # the columns read as strings, in the order they are checked
    empty: dict[str, int]  # string column -> first row with an empty id
    nonfinite: dict[str, tuple[int, int]]  # number column -> (first NaN/inf row, how many)
    ids_int: dict[str, bool]  # "id" columns kept as strings: whether every id is an integer


class _NeedStrings(Exception):
    """An integer-or-string ("id") column holds a non-integer: read the id columns as strings."""


def _parse_block(
    loadtxt: Callable[..., np.ndarray],
    cols: Sequence[ColumnSpec],
    *,
    ids_as_str: bool,
    convert_ids: bool,
    diagnose: Callable[[Sequence[ColumnSpec]], DataError | None],
    fail: Callable[[Exception, Sequence[ColumnSpec]], DataError],
) -> _Block:
    """Parse one block with numpy's C reader (``loadtxt(usecols, dtype, ndmin)``).

    ``diagnose(spec)`` scans the *whole file* for the first bad line (so a chunk reports the same
    line the whole-file read would) and ``fail(exc, spec)`` turns a parse error into a DataError.
    With ``ids_as_str`` the "id" columns are read as strings (after a non-integer id was found);
    ``convert_ids`` then turns each "id" column that is all integers back into int64 (the
    whole-file rule), otherwise ``ids_int`` only records whether it could. Without
    ``ids_as_str`` a non-integer "id" raises :class:`_NeedStrings`.
    """
    numeric_of = {"int": np.int64, "id": np.int64, "float": np.float64, "time": np.float64}
    if ids_as_str:
        numeric = [c for c in cols if c.kind not in ("str", "id")]
        strings = [c for c in cols if c.kind == "str"] + [c for c in cols if c.kind == "id"]
    else:
        numeric = [c for c in cols if c.kind != "str"]
        strings = [c for c in cols if c.kind == "str"]
    out: dict[str, np.ndarray] = {}
    try:
        if numeric:
            dt = [(c.name, numeric_of[c.kind]) for c in numeric]
            arr = loadtxt([c.index for c in numeric], dt)
            out.update({c.name: np.ascontiguousarray(arr[c.name]) for c in numeric})
    except ValueError as exc:
        if ids_as_str:
            raise fail(exc, cols) from None
        # an "id" column that is not all-integer is read as strings instead
        as_int = [ColumnSpec(c.name, c.index, "int" if c.kind == "id" else c.kind, c.label)
                  for c in numeric]  # fmt: skip
        err = diagnose(as_int)
        flexible = [c for c in numeric if c.kind == "id"]
        if err is not None and "integer" in err.problem and flexible:
            raise _NeedStrings from None
        raise (err or fail(exc, cols)) from None
    empty: dict[str, int] = {}
    ids_int: dict[str, bool] = {}
    if strings:
        try:
            arr = loadtxt([c.index for c in strings], str, ndmin=2)
        except ValueError as exc:
            raise fail(exc, cols) from None
        for j, c in enumerate(strings):
            col = np.char.strip(arr[:, j].astype(str))
            is_empty = col == ""
            if is_empty.any():
                empty[c.name] = int(np.flatnonzero(is_empty)[0])
            out[c.name] = col
            if c.kind == "id" and c.name not in empty:  # integers if they all are, else strings
                try:
                    as_ints = col.astype(np.int64)
                except ValueError:
                    ids_int[c.name] = False
                else:
                    ids_int[c.name] = True
                    if convert_ids:
                        out[c.name] = as_ints
    n = next(iter(out.values())).size if out else 0
    nonfinite: dict[str, tuple[int, int]] = {}
    for c in cols:
        if c.kind in ("float", "time"):
            bad = ~np.isfinite(out[c.name])
            if bad.any():
                nonfinite[c.name] = (int(np.flatnonzero(bad)[0]), int(bad.sum()))
            elif c.kind == "time":
                t = out[c.name]
                if np.all(t == np.round(t)) and np.all(np.abs(t) < 2**53):
                    out[c.name] = t.astype(np.int64)
    return _Block(out, n, strings, empty, nonfinite, ids_int)


def _block_error(
    path: Path,
    cols: Sequence[ColumnSpec],
    strings: Sequence[ColumnSpec],
    *,
    empty_line: dict[str, int | None],
    n_rows: int,
    nonfinite: dict[str, tuple[int | None, int]],
    header: bool,
) -> DataError | None:
    """The error :func:`read_columns` reports for these problems (line numbers given), in its
    order: an empty string id (per column), no data at all, NaN/inf numbers (per column)."""
    for c in strings:
        if c.name in empty_line:
            return DataError(
                f"{c.describe()} is empty",
                path=path,
                line=empty_line[c.name],
                fix="fill in the id or remove the line",
            )
    if n_rows == 0:
        return DataError(
            "no data lines" + (" after the header" if header else ""),
            path=path,
            fix="check that the file holds interactions",
        )
    for c in cols:
        if c.name in nonfinite:
            line, count = nonfinite[c.name]
            return DataError(
                f"{c.describe()} is NaN or infinite "
                f"({count} such line{'s' if count > 1 else ''} in the file)",
                path=path,
                line=line,
                fix="fix or remove those lines",
            )
    return None


def _loadtxt(
    src: Any, *, delimiter: str | None, skiprows: int, quotechar: str | None, encoding: str
) -> Callable[..., np.ndarray]:
    """``loadtxt(usecols, dtype, ndmin=1)`` over ``src`` (a path or a StringIO, rewound)."""

    def load(usecols: list[int], dtype: Any, ndmin: int = 1) -> np.ndarray:
        if isinstance(src, io.StringIO):
            src.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": checked by the caller
            return np.loadtxt(
                src,
                dtype=dtype,
                delimiter=delimiter,
                skiprows=skiprows,
                usecols=usecols,
                comments=None,
                quotechar=quotechar,
                encoding=encoding,
                ndmin=ndmin,
            )

    return load


def read_columns(
    path: PathLike,
    cols: Sequence[ColumnSpec],
    *,
    sep: str | None,
    skip_lines: int = 0,
    encoding: str = "utf-8",
    quotechar: str | None = None,
) -> dict[str, np.ndarray]:
    """Read the given columns of a delimited text file into numpy arrays, fast, with exact
    line numbers in every error. Multi-character separators (e.g. ``"::"``) are supported.

    Returns a dict name -> array: int64 for ``"int"``, int64 or str for ``"id"``, str for
    ``"str"``, float64 for ``"float"``, int64 or float64 for ``"time"``.
    """
    path = Path(path)
    _check_file(path)
    src: Any = path
    load_sep = sep
    if sep is not None and len(sep) > 1:  # np.loadtxt needs a single-character delimiter
        with open(path, encoding=encoding, errors="replace") as fh:
            src = io.StringIO(fh.read().replace(sep, "\x1f"))
        load_sep = "\x1f"
    diag = dict(sep=sep, skip_lines=skip_lines, encoding=encoding, quotechar=quotechar)

    def diagnose(spec: Sequence[ColumnSpec]) -> DataError | None:
        return _diagnose(path, spec, **diag)  # type: ignore[arg-type]

    def fail(exc: Exception, spec: Sequence[ColumnSpec]) -> DataError:
        err = diagnose(spec)
        return err or DataError(f"cannot parse the file ({exc})", path=path, fix="check its format")

    kw = dict(diagnose=diagnose, fail=fail, convert_ids=True)
    load = _loadtxt(
        src, delimiter=load_sep, skiprows=skip_lines, quotechar=quotechar, encoding=encoding
    )
    try:
        block = _parse_block(load, cols, ids_as_str=False, **kw)  # type: ignore[arg-type]
    except _NeedStrings:
        block = _parse_block(load, cols, ids_as_str=True, **kw)  # type: ignore[arg-type]

    def line(row: int | None) -> int | None:
        return None if row is None else _line_of_row(path, row, skip_lines, encoding)

    err = _block_error(
        path,
        cols,
        block.strings,
        empty_line={name: line(row) for name, row in block.empty.items()},
        n_rows=block.n_rows,
        nonfinite={name: (line(row), count) for name, (row, count) in block.nonfinite.items()},
        header=bool(skip_lines),
    )
    if err is not None:
        raise err
    return block.columns


# --------------------------------------------------------------------------------------------
# header and separator handling
# --------------------------------------------------------------------------------------------


def _first_line(path: Path, encoding: str) -> str:
    for _, line in _iter_lines(path, encoding):
        if line.strip():
            return line.lstrip("\ufeff")
    raise DataError("the file has no data (only blank lines)", path=path)


def _guess_sep(path: Path, first: str) -> str | None:
    ext = path.suffix.lower()
    if ext == ".csv":
        return ","
    if ext in (".tsv", ".tab"):
        return "\t"
    for sep in ("\t", ",", ";", "|"):
        if sep in first:
            return sep
    return None  # whitespace


def _resolve(
    path: Path,
    wanted: dict[str, tuple[Column | None, str]],
    names: list[str] | None,
    n_fields: int,
) -> list[ColumnSpec]:
    specs = []
    for out_name, (col, kind) in wanted.items():
        if col is None:
            continue
        if isinstance(col, str):
            if names is None:
                raise DataError(
                    f"column {col!r} given by name but the file has no header",
                    path=path,
                    fix="pass header=True, names=[...], or a 0-based column number",
                )
            if col not in names:
                raise DataError(
                    f"missing column {col!r} ({out_name}); the columns are {names}",
                    path=path,
                    line=1,
                    fix=f"pass {out_name}_col= one of those names",
                )
            specs.append(ColumnSpec(out_name, names.index(col), kind, repr(col)))
        else:
            if not 0 <= int(col) < n_fields:
                raise DataError(
                    f"missing column {col} ({out_name}): lines have {n_fields} fields",
                    path=path,
                    fix=f"pass {out_name}_col= a 0-based column number below {n_fields}",
                )
            label = repr(names[int(col)]) if names else f"column {int(col) + 1}"
            specs.append(ColumnSpec(out_name, int(col), kind, label))
    return specs


def _delimited_setup(
    path: Path,
    wanted: dict[str, tuple[Column | None, str]],
    *,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
) -> tuple[list[ColumnSpec], str | None, str | None]:
    """Check the file, guess the separator, resolve the columns: (specs, sep, quote char)."""
    _check_file(path)
    first = _first_line(path, encoding)
    if sep is None:
        sep = _guess_sep(path, first)
    quote = '"' if sep is not None and len(sep) == 1 else None
    fields = [f.strip().strip('"') for f in _split_line(first, sep, quote)]
    col_names = list(names) if names is not None else (fields if header else None)
    return _resolve(path, wanted, col_names, len(fields)), sep, quote


def _read_delimited(
    path: Path,
    wanted: dict[str, tuple[Column | None, str]],
    *,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
) -> dict[str, np.ndarray]:
    specs, sep, quote = _delimited_setup(
        path, wanted, sep=sep, header=header, names=names, encoding=encoding
    )
    return read_columns(
        path, specs, sep=sep, skip_lines=1 if header else 0, encoding=encoding, quotechar=quote
    )


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def _parquet_setup(path: Path, wanted: dict[str, tuple[Column | None, str]]) -> dict[str, str]:
    """Check the file and map each wanted output column to its Parquet column name."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading Parquet ({path}) needs pyarrow: pip install pyarrow "
            "(or install this package with the [parquet] extra)"
        ) from exc
    _check_file(path)
    try:
        schema_names = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(
            f"not a readable Parquet file ({exc})", path=path, fix="check the file"
        ) from None
    cols: dict[str, str] = {}
    for out_name, (col, _) in wanted.items():
        if col is None:
            continue
        name = schema_names[col] if isinstance(col, int) and 0 <= col < len(schema_names) else col
        if name not in schema_names:
            raise DataError(
                f"missing column {col!r} ({out_name}); the columns are {schema_names}",
                path=path,
                fix=f"pass {out_name}_col= one of those names",
            )
        cols[out_name] = str(name)
    return cols


def _nulls_error(path: Path, name: str, out_name: str, count: int, row: int) -> DataError:
    return DataError(
        f"column {name!r} ({out_name}) has {count} missing values, the first at row {row}",
        path=path,
        fix="fill or drop those rows",
    )


def _parquet_array(
    arr: np.ndarray, arrow_type: Any, name: str, out_name: str, kind: str, path: Path, row0: int
) -> np.ndarray:
    """Check and convert one Parquet column (or a slice of it starting at row ``row0``)."""
    if kind in ("float", "time"):
        if arr.dtype.kind == "M":  # datetimes -> Unix seconds
            arr = arr.astype("datetime64[s]").astype(np.int64)
        if arr.dtype.kind not in "iufb":
            raise DataError(
                f"column {name!r} ({out_name}) has type {arrow_type}, expected numbers",
                path=path,
                fix="convert it to a numeric type",
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            row = row0 + int(np.flatnonzero(~np.isfinite(arr))[0])
            raise DataError(
                f"column {name!r} ({out_name}) is NaN or infinite at row {row}",
                path=path,
                fix="fix or drop those rows",
            )
    else:
        if arr.dtype.kind == "O":
            arr = arr.astype(str)
        if kind == "int" and arr.dtype.kind not in "iu":
            raise DataError(
                f"column {name!r} ({out_name}) has type {arrow_type}, expected integer ids",
                path=path,
                fix="convert the ids to integers or pass id_type='auto'",
            )
        if kind == "str":
            arr = arr.astype(str)
    return arr


def _read_parquet(path: Path, wanted: dict[str, tuple[Column | None, str]]) -> dict[str, Any]:
    cols = _parquet_setup(path, wanted)  # checks that pyarrow is there
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=sorted(set(cols.values())))
    out: dict[str, Any] = {}
    for out_name, name in cols.items():
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise _nulls_error(path, name, out_name, col.null_count, row)
        kind = wanted[out_name][1]
        out[out_name] = _parquet_array(col.to_numpy(), col.type, name, out_name, kind, path, 0)
    if not out or next(iter(out.values())).size == 0:
        raise DataError("the table has no rows", path=path, fix="check the file")
    return out


# --------------------------------------------------------------------------------------------
# chunked reading (two passes; see recsys.data.chunked)
# --------------------------------------------------------------------------------------------

#: Lines (text) or rows (Parquet) parsed at a time by :func:`load_table`.
DEFAULT_CHUNK_ROWS = 1_000_000


@dataclass
class _Scan:
    """What the first pass over a file found: the id maps, rows per user, and storage dtypes."""

    user_ids: np.ndarray
    user_rows: np.ndarray
    item_ids: np.ndarray
    n_rows: int
    value_dtype: Any
    timestamp_dtype: Any
    #: problems ``Interactions.from_columns`` reports after reading (raised by the caller, after
    #: its own checks, in this order)
    pending: list[DataError]


class _LineCursor:
    """One handle on a text file handing out ``chunk_rows`` lines at a time as an iterator that
    numpy's reader consumes directly (no list of lines, no joined copy of the chunk)."""

    def __init__(self, src: _TextSource) -> None:
        # the whole-file reader lets numpy open the file (strict decoding), except for
        # multi-character separators, where it reads the text itself with errors="replace"
        errors = "replace" if src.multi else "strict"
        self.fh = open(src.path, encoding=src.encoding, errors=errors)  # noqa: SIM115
        self.chunk_rows = src.chunk_rows
        self.sep = src.sep if src.multi else None
        for _ in range(src.skip_lines):
            if next(self.fh, None) is None:
                break
        self.pending: str | None = next(self.fh, None)
        self.current: Iterator[str] | None = None

    def take(self) -> Iterator[str]:
        """The lines of the current chunk (call :meth:`advance` before the next one)."""
        if self.current is None:
            assert self.pending is not None
            rest = itertools.islice(self.fh, self.chunk_rows - 1)
            self.current = itertools.chain((self.pending,), rest)
        lines = self.current
        if self.sep is not None:  # numpy needs a single-character delimiter
            sep = self.sep
            lines = (line.replace(sep, "\x1f") for line in lines)
        return lines

    def advance(self) -> bool:
        """Skip what is left of the current chunk; whether another chunk follows."""
        if self.current is None:
            self.take()
        collections.deque(self.current or (), maxlen=0)
        self.current = None
        self.pending = next(self.fh, None)
        return self.pending is not None

    def close(self) -> None:
        self.fh.close()


class _TextSource:
    """A delimited text file read ``chunk_rows`` lines at a time, twice (scan, then chunks).

    Every chunk goes through the same parser as the whole-file reader; where that reader would
    look at the whole file to describe an error, so does this one, and problems it reports only
    after parsing everything (empty ids, NaN values) are collected over all chunks first, so the
    error raised is the one the whole-file reader raises. Numbers and strings are parsed in two
    calls, each fed from its own file handle kept in step chunk by chunk.
    """

    def __init__(
        self,
        path: Path,
        specs: list[ColumnSpec],
        *,
        sep: str | None,
        skip_lines: int,
        encoding: str,
        quotechar: str | None,
        chunk_rows: int,
    ) -> None:
        self.path, self.specs, self.sep = path, specs, sep
        self.skip_lines, self.encoding, self.quotechar = skip_lines, encoding, quotechar
        self.chunk_rows = chunk_rows
        self.multi = sep is not None and len(sep) > 1
        self.ids_as_str = False  # set when an "id" column turns out to hold non-integers
        self.ids_to_int: list[str] = []  # "id" columns read as strings that are all integers

    def _blocks(self) -> Iterator[tuple[int, _Block]]:
        """(data rows before the block, block) for every chunk of the file."""
        cursors: dict[bool, _LineCursor] = {}
        try:
            lead = cursors[False] = _LineCursor(self)
            if lead.pending is None:
                return

            def load(usecols: list[int], dtype: Any, ndmin: int = 1) -> np.ndarray:
                strings = dtype is str
                if strings not in cursors:
                    cursors[strings] = _LineCursor(self)  # starts at the first chunk
                    for _ in range(chunk):
                        cursors[strings].advance()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "input contained no data": checked later
                    return np.loadtxt(
                        cursors[strings].take(),
                        dtype=dtype,
                        delimiter="\x1f" if self.multi else self.sep,
                        usecols=usecols,
                        comments=None,
                        quotechar=self.quotechar,
                        encoding=self.encoding,
                        ndmin=ndmin,
                    )

            rows_before, chunk, more = 0, 0, True
            while more:
                block = _parse_block(
                    load,
                    self.specs,
                    ids_as_str=self.ids_as_str,
                    convert_ids=False,
                    diagnose=self._diagnose,
                    fail=self._fail,
                )
                yield rows_before, block
                rows_before += block.n_rows
                chunk += 1
                more = lead.advance()
                for strings, cursor in cursors.items():
                    if strings:
                        cursor.advance()
        finally:
            for cursor in cursors.values():
                cursor.close()

    def _diagnose(self, spec: Sequence[ColumnSpec]) -> DataError | None:
        return _diagnose(
            self.path,
            spec,
            sep=self.sep,
            skip_lines=self.skip_lines,
            encoding=self.encoding,
            quotechar=self.quotechar,
        )

    def _fail(self, exc: Exception, spec: Sequence[ColumnSpec]) -> DataError:
        err = self._diagnose(spec)
        return err or DataError(
            f"cannot parse the file ({exc})", path=self.path, fix="check its format"
        )

    def _line(self, row: int) -> int | None:
        return _line_of_row(self.path, row, self.skip_lines, self.encoding)

    def scan(self) -> _Scan:
        try:
            return self._scan()
        except _NeedStrings:
            self.ids_as_str = True
            return self._scan()

    def _scan(self) -> _Scan:
        users, items = IdCounter(), IdCounter()
        empty_row: dict[str, int] = {}
        nonfinite: dict[str, tuple[int, int]] = {}
        ids_int = {c.name: True for c in self.specs if c.kind == "id"}
        n_rows, values_exact, times_int = 0, True, True
        strings: list[ColumnSpec] = []
        for rows_before, block in self._blocks():
            strings = block.strings
            for name, row in block.empty.items():
                empty_row.setdefault(name, rows_before + row)
            for name, (row, count) in block.nonfinite.items():
                first, seen = nonfinite.get(name, (rows_before + row, 0))
                nonfinite[name] = (first, seen + count)
            n_rows += block.n_rows
            if empty_row or nonfinite or block.n_rows == 0:
                continue  # an error will be raised: stop collecting
            for name, ok in block.ids_int.items():
                ids_int[name] = ids_int[name] and ok
            cols = block.columns
            users.add(cols["user"])
            items.add(cols["item"])
            if "value" in cols:
                values_exact = values_exact and exact_in_float32(cols["value"])
            if "timestamp" in cols:
                times_int = times_int and cols["timestamp"].dtype.kind == "i"
        err = _block_error(
            self.path,
            self.specs,
            strings,
            empty_line={name: self._line(row) for name, row in empty_row.items()},
            n_rows=n_rows,
            nonfinite={name: (self._line(row), n) for name, (row, n) in nonfinite.items()},
            header=bool(self.skip_lines),
        )
        if err is not None:
            raise err
        self.ids_to_int = [n for n, ok in ids_int.items() if ok] if self.ids_as_str else []
        for name, counter in (("user", users), ("item", items)):
            if name in self.ids_to_int:
                counter.as_int()
        names = {c.name for c in self.specs}
        user_ids, user_rows = users.result()
        return _Scan(
            user_ids,
            user_rows,
            items.result()[0],
            n_rows,
            np.float32 if values_exact else np.float64,
            None if "timestamp" not in names else (np.int64 if times_int else np.float64),
            [],
        )

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for _, block in self._blocks():
            cols = block.columns
            for name in self.ids_to_int:
                cols[name] = cols[name].astype(np.int64)
            yield cols


def _chunk_ids(arr: np.ndarray, what: str, source: str, row0: int) -> np.ndarray:
    """``_as_ids`` of Interactions.from_columns for a slice of a column starting at ``row0``
    (row numbers in its messages count from the start of the file)."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what} contains a missing or non-finite id ({arr[k]}) at row {row0 + k}",
                path=source,
                fix="remove the rows without an id",
            )
        frac = arr != np.round(arr)
        if frac.any():
            k = int(np.flatnonzero(frac)[0])
            raise DataError(
                f"{what} contains a non-integer numeric id ({arr[k]}) at row {row0 + k}",
                path=source,
                fix="use integer or string ids",
            )
        return arr.astype(np.int64)
    return _as_ids(arr, what, source)


class _ParquetSource:
    """A Parquet file read in record batches of at most ``chunk_rows`` rows (pyarrow reads them
    row group by row group), twice: a column-by-column scan with the whole-table reader's checks
    in its order, then all columns batch by batch."""

    def __init__(
        self, path: Path, wanted: dict[str, tuple[Column | None, str]], chunk_rows: int
    ) -> None:
        self.cols = _parquet_setup(path, wanted)
        import pyarrow.parquet as pq

        self.path, self.wanted, self.chunk_rows = path, wanted, chunk_rows
        # pre_buffer would cache every row group's column chunks until the reader is closed
        self.file = pq.ParquetFile(path, pre_buffer=False)

    def _batches(self, names: list[str]) -> Iterator[tuple[int, Any]]:
        offset = 0
        for batch in self.file.iter_batches(batch_size=self.chunk_rows, columns=names):
            yield offset, batch
            offset += batch.num_rows

    def _convert(self, out_name: str, col: Any, row0: int) -> np.ndarray:
        arr = col.to_numpy(zero_copy_only=False)
        kind = self.wanted[out_name][1]
        return _parquet_array(arr, col.type, self.cols[out_name], out_name, kind, self.path, row0)

    def scan(self) -> _Scan:
        source = str(self.path)
        users, items = IdCounter(), IdCounter()
        pending: dict[str, DataError] = {}
        n_rows, values_exact, times_int = 0, True, True
        for out_name, name in self.cols.items():
            nulls, first_null, problem = 0, 0, None
            for row0, batch in self._batches([name]):
                col = batch.column(name)
                if col.null_count:
                    if not nulls:
                        first_null = row0 + int(np.flatnonzero(np.asarray(col.is_null()))[0])
                    nulls += col.null_count
                if nulls or problem is not None:
                    continue
                try:
                    arr = self._convert(out_name, col, row0)
                except DataError as err:
                    problem = err
                    continue
                if out_name in ("user", "item"):
                    if out_name in pending:
                        continue
                    try:
                        ids = _chunk_ids(arr, f"{out_name}s", source, row0)
                    except DataError as err:
                        pending[out_name] = err
                        continue
                    if out_name == "user":
                        n_rows += ids.size
                        users.add(ids)
                    else:
                        items.add(ids)
                elif out_name == "value":
                    values_exact = values_exact and exact_in_float32(arr)
                elif arr.dtype.kind == "b":
                    pending.setdefault(
                        "timestamp",
                        DataError(
                            f"timestamps must be numeric, got {arr.dtype}",
                            path=source,
                            fix="convert them to numbers such as Unix seconds",
                        ),
                    )
                elif arr.dtype.kind == "f":
                    times_int = (
                        times_int and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2**53)
                    )
            if nulls:
                raise _nulls_error(self.path, name, out_name, nulls, first_null)
            if problem is not None:
                raise problem
        if self.file.metadata.num_rows == 0:
            raise DataError("the table has no rows", path=self.path, fix="check the file")
        user_ids, user_rows = users.result()
        return _Scan(
            user_ids,
            user_rows,
            items.result()[0],
            n_rows,
            np.float32 if values_exact else np.float64,
            None if "timestamp" not in self.cols else (np.int64 if times_int else np.float64),
            [pending[k] for k in ("user", "item", "timestamp") if k in pending],
        )

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        source = str(self.path)
        names = sorted(set(self.cols.values()))
        for row0, batch in self._batches(names):
            out = {}
            for out_name, name in self.cols.items():
                arr = self._convert(out_name, batch.column(name), row0)
                if out_name in ("user", "item"):
                    arr = _chunk_ids(arr, f"{out_name}s", source, row0)
                out[out_name] = arr
            yield out


def _open_chunked(
    path: PathLike,
    *,
    user_col: Column,
    item_col: Column,
    value_col: Column | None,
    timestamp_col: Column | None,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
    id_type: IdType,
    format: str | None,
    chunk_rows: int,
) -> _TextSource | _ParquetSource:
    """The chunked counterpart of ``_read_any``: same checks before any data is read."""
    path = Path(path)
    kind = _id_kind(id_type)
    wanted = {
        "user": (user_col, kind),
        "item": (item_col, kind),
        "value": (value_col, "float"),
        "timestamp": (timestamp_col, "time"),
    }
    fmt = format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "text")
    if fmt == "parquet":
        return _ParquetSource(path, wanted, chunk_rows)
    if fmt != "text":
        raise ValueError(f"format must be 'text' or 'parquet', got {format!r}")
    specs, sep, quote = _delimited_setup(
        path, wanted, sep=sep, header=header, names=names, encoding=encoding
    )
    return _TextSource(
        path,
        specs,
        sep=sep,
        skip_lines=1 if header else 0,
        encoding=encoding,
        quotechar=quote,
        chunk_rows=chunk_rows,
    )


def _check_chunk_rows(chunk_rows: int | None) -> None:
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool)
        or not isinstance(chunk_rows, int | np.integer)
        or chunk_rows < 1
    ):
        raise ValueError(
            f"chunk_rows must be a positive number of rows (or None to read the whole file at "
            f"once), got {chunk_rows!r}"
        )


def _build(
    src: _TextSource | _ParquetSource,
    scan: _Scan,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    duplicates: Duplicates,
) -> Interactions:
    """Second pass: the Interactions of ``src`` in the id space ``user_ids`` x ``item_ids``
    (which hold the scanned ids, possibly more; int ids become strings when these are)."""
    user_rows = np.zeros(user_ids.size, dtype=np.int64)
    if scan.user_ids.size:
        own = scan.user_ids.astype(str) if user_ids.dtype.kind == "U" else scan.user_ids
        user_rows[np.searchsorted(user_ids, own)] = scan.user_rows
    to_str = {name: ids.dtype.kind == "U" for name, ids in (("user", user_ids), ("item", item_ids))}

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for cols in src.chunks():
            for name, as_str in to_str.items():
                if as_str and cols[name].dtype.kind != "U":
                    cols[name] = cols[name].astype(str)
            yield cols

    return build_from_chunks(
        chunks,
        user_ids=user_ids,
        item_ids=item_ids,
        user_rows=user_rows,
        duplicates=duplicates,
        value_dtype=np.float32 if duplicates != "sum" else scan.value_dtype,
        timestamp_dtype=scan.timestamp_dtype,
        source=str(src.path),
        block_entries=src.chunk_rows,
    )


def _check_duplicates(duplicates: str) -> None:
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_RULES}, got {duplicates!r}")


# --------------------------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------------------------


def _id_kind(id_type: IdType) -> str:
    if id_type not in ("auto", "int", "str"):
        raise ValueError(f"id_type must be 'auto', 'int' or 'str', got {id_type!r}")
    return {"auto": "id", "int": "int", "str": "str"}[id_type]


def _read_any(
    path: PathLike,
    *,
    user_col: Column,
    item_col: Column,
    value_col: Column | None,
    timestamp_col: Column | None,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
    id_type: IdType,
    format: str | None,
) -> dict[str, Any]:
    path = Path(path)
    kind = _id_kind(id_type)
    wanted = {
        "user": (user_col, kind),
        "item": (item_col, kind),
        "value": (value_col, "float"),
        "timestamp": (timestamp_col, "time"),
    }
    fmt = format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "text")
    if fmt == "parquet":
        return _read_parquet(path, wanted)
    if fmt != "text":
        raise ValueError(f"format must be 'text' or 'parquet', got {format!r}")
    return _read_delimited(path, wanted, sep=sep, header=header, names=names, encoding=encoding)


def load_table(
    path: PathLike,
    *,
    user_col: Column = "user",
    item_col: Column = "item",
    value_col: Column | None = None,
    timestamp_col: Column | None = None,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    id_type: IdType = "auto",
    duplicates: Duplicates = "sum",
    format: Literal["text", "parquet"] | None = None,
    test_path: PathLike | None = None,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> Interactions | Split:
    """Load interactions from a delimited text file or a Parquet file.

    The file is read ``chunk_rows`` lines (text) or rows (Parquet record batches, read row
    group by row group) at a time, in two passes: the first parses and checks every chunk and
    collects the user and item ids and each user's row count, the second parses again and
    writes each chunk straight into preallocated CSR arrays (see :mod:`recsys.data.chunked`).
    The whole table and the matrix are never in memory together; the result, and every error
    message, is the same as reading the whole file at once (``chunk_rows=None``), which parses
    once and is faster when the table fits in memory several times over.

    Args:
        path: the file; ``.parquet`` / ``.pq`` files (or ``format="parquet"``) are read with
            pyarrow, everything else as delimited text.
        user_col, item_col: column names (with a header or ``names``) or 0-based positions.
        value_col: ratings/counts/confidences; every interaction counts 1.0 when omitted.
        timestamp_col: numeric timestamps (Parquet datetime columns become Unix seconds).
        sep: field separator; guessed from the extension (``.csv``: ``,``; ``.tsv``: tab) or the
            first line (tab, comma, semicolon, pipe, else whitespace) when omitted. May be
            several characters (``"::"``).
        header: the first line holds column names (ignored for Parquet).
        names: column names for a file without a header (then pass ``header=False``).
        id_type: ``"auto"`` (integers if every id is one, else strings), ``"int"`` or ``"str"``.
        duplicates: rule for repeated (user, item) pairs, see
            :meth:`Interactions.from_columns`.
        test_path: a second file with the same layout holding the test interactions: the result
            is then a :class:`Split` (see :func:`load_table_split`).
        chunk_rows: lines / rows parsed at a time (memory per chunk: roughly this many parsed
            lines); None reads the whole file at once.
    """
    _check_chunk_rows(chunk_rows)
    if test_path is not None:
        return load_table_split(
            path,
            test_path,
            user_col=user_col,
            item_col=item_col,
            value_col=value_col,
            timestamp_col=timestamp_col,
            sep=sep,
            header=header,
            names=names,
            encoding=encoding,
            id_type=id_type,
            duplicates=duplicates,
            format=format,
            chunk_rows=chunk_rows,
        )
    if chunk_rows is not None:
        src = _open_chunked(
            path,
            user_col=user_col,
            item_col=item_col,
            value_col=value_col,
            timestamp_col=timestamp_col,
            sep=sep,
            header=header,
            names=names,
            encoding=encoding,
            id_type=id_type,
            format=format,
            chunk_rows=int(chunk_rows),
        )
        scan = src.scan()
        _check_duplicates(duplicates)
        if scan.pending:
            raise scan.pending[0]
        return _build(src, scan, scan.user_ids, scan.item_ids, duplicates)
    cols = _read_any(
        path,
        user_col=user_col,
        item_col=item_col,
        value_col=value_col,
        timestamp_col=timestamp_col,
        sep=sep,
        header=header,
        names=names,
        encoding=encoding,
        id_type=id_type,
        format=format,
    )
    return Interactions.from_columns(
        cols["user"],
        cols["item"],
        cols.get("value"),
        cols.get("timestamp"),
        duplicates=duplicates,
        source=str(path),
    )


def _union_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (a.dtype.kind == "U") != (b.dtype.kind == "U"):
        # one file had only integer ids, the other also strings: compare as strings
        a, b = a.astype(str), b.astype(str)
    return unique_sorted(a, b)


def split_from_parts(
    train_cols: dict[str, Any],
    test_cols: dict[str, Any],
    *,
    train_source: str,
    test_source: str,
    duplicates: Duplicates = "sum",
    item_titles: Any = None,
    extra_users: np.ndarray | None = None,
    extra_items: np.ndarray | None = None,
) -> Split:
    """Build a predefined train/test :class:`Split` from two sets of columns, in one shared id
    space (the union of the ids of both parts). Used by the file-based split loaders."""
    users = _union_ids(train_cols["user"], test_cols["user"])
    items = _union_ids(train_cols["item"], test_cols["item"])
    if extra_users is not None:
        users = unique_sorted(users, extra_users)
    if extra_items is not None:
        items = unique_sorted(items, extra_items)

    def build(cols: dict[str, Any], source: str) -> Interactions:
        u, i = np.asarray(cols["user"]), np.asarray(cols["item"])
        if users.dtype.kind == "U":
            u = u.astype(str)
        if items.dtype.kind == "U":
            i = i.astype(str)
        return Interactions.from_columns(
            u,
            i,
            cols.get("value"),
            cols.get("timestamp"),
            duplicates=duplicates,
            user_ids=users,
            item_ids=items,
            item_titles=item_titles,
            source=source,
            allow_empty=True,
        )

    train = build(train_cols, train_source)
    test = build(test_cols, test_source)
    return _predefined_split(train, test, train_source=train_source, test_source=test_source)


def _predefined_split(
    train: Interactions, test: Interactions, *, train_source: str, test_source: str
) -> Split:
    """The Split of a train and a test part in one id space, with its report."""
    if train.nnz == 0:
        raise DataError("the training file has no interactions", path=train_source)
    if test.nnz == 0:
        raise DataError("the test file has no interactions", path=test_source)
    train_users = train.user_degrees() > 0
    train_items = train.item_degrees() > 0
    tu = test.entry_users()
    report = {
        "method": "predefined",
        "train_file": train_source,
        "test_file": test_source,
        "n_users": train.n_users,
        "n_items": train.n_items,
        "train_interactions": train.nnz,
        "test_interactions": test.nnz,
        "test_users": int((test.user_degrees() > 0).sum()),
        "test_interactions_cold_user": int((~train_users[tu]).sum()),
        "test_interactions_cold_item": int((~train_items[test.matrix.indices]).sum()),
    }
    return Split(train, test, None, report)


def load_table_split(
    train_path: PathLike,
    test_path: PathLike,
    *,
    user_col: Column = "user",
    item_col: Column = "item",
    value_col: Column | None = None,
    timestamp_col: Column | None = None,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    id_type: IdType = "auto",
    duplicates: Duplicates = "sum",
    format: Literal["text", "parquet"] | None = None,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
) -> Split:
    """Load a predefined split from two files with the same layout (see :func:`load_table`).

    Train and test share one id space: the union of the ids in both files. Test interactions
    of users or items absent from train are kept and counted in the report
    (``test_interactions_cold_user`` / ``test_interactions_cold_item``). Both files are read
    ``chunk_rows`` at a time as in :func:`load_table` (None: each whole file at once).
    """
    _check_chunk_rows(chunk_rows)
    kw: dict[str, Any] = dict(
        user_col=user_col,
        item_col=item_col,
        value_col=value_col,
        timestamp_col=timestamp_col,
        sep=sep,
        header=header,
        names=names,
        encoding=encoding,
        id_type=id_type,
        format=format,
    )
    if chunk_rows is not None:
        tr_src = _open_chunked(train_path, chunk_rows=int(chunk_rows), **kw)
        tr_scan = tr_src.scan()
        te_src = _open_chunked(test_path, chunk_rows=int(chunk_rows), **kw)
        te_scan = te_src.scan()
        _check_duplicates(duplicates)
        for scan in (tr_scan, te_scan):
            if scan.pending:
                raise scan.pending[0]
        users = _union_ids(tr_scan.user_ids, te_scan.user_ids)
        items = _union_ids(tr_scan.item_ids, te_scan.item_ids)
        return _predefined_split(
            _build(tr_src, tr_scan, users, items, duplicates),
            _build(te_src, te_scan, users, items, duplicates),
            train_source=str(train_path),
            test_source=str(test_path),
        )
    tr = _read_any(train_path, **kw)
    te = _read_any(test_path, **kw)
    return split_from_parts(
        tr, te, train_source=str(train_path), test_source=str(test_path), duplicates=duplicates
    )
