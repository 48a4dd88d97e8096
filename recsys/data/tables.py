"""Generic tabular loaders: delimited text (CSV/TSV/any separator) and Parquet.

"Bring your own data": name the user, item and (optionally) value and timestamp columns, and
optionally a separate test file for a predefined split::

    data = load_table("events.csv", user_col="user", item_col="item", value_col="clicks")
    split = load_table_split("train.tsv", "test.tsv", user_col=0, item_col=1, header=False)

Parsing uses numpy's C reader (``np.loadtxt``) on the whole file, so it is fast; only when that
fails does a line-by-line pass run to find the first bad line and report it precisely. Every
problem is a :class:`~recsys.data.errors.DataError` naming the file, the line and what to fix.

Ids are read as integers when every id in the column is an integer, otherwise as strings
(``id_type="auto"``); force one with ``id_type="int"`` / ``"str"``. Values and timestamps must be
finite numbers (timestamps as numbers, e.g. Unix seconds).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recsys.data.errors import DataError
from recsys.data.interactions import Duplicates, Interactions, unique_sorted
from recsys.data.splits import Split

__all__ = ["load_table", "load_table_split", "read_columns"]

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

    def loadtxt(usecols: list[int], dtype: Any, ndmin: int = 1) -> np.ndarray:
        if isinstance(src, io.StringIO):
            src.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": checked below
            return np.loadtxt(
                src,
                dtype=dtype,
                delimiter=load_sep,
                skiprows=skip_lines,
                usecols=usecols,
                comments=None,
                quotechar=quotechar,
                encoding=encoding,
                ndmin=ndmin,
            )

    def fail(exc: Exception, spec: Sequence[ColumnSpec]) -> DataError:
        err = _diagnose(path, spec, **diag)  # type: ignore[arg-type]
        return err or DataError(f"cannot parse the file ({exc})", path=path, fix="check its format")

    numeric_of = {"int": np.int64, "id": np.int64, "float": np.float64, "time": np.float64}
    numeric = [c for c in cols if c.kind != "str"]
    strings = [c for c in cols if c.kind == "str"]
    out: dict[str, np.ndarray] = {}
    try:
        if numeric:
            dt = [(c.name, numeric_of[c.kind]) for c in numeric]
            arr = loadtxt([c.index for c in numeric], dt)
            out.update({c.name: np.ascontiguousarray(arr[c.name]) for c in numeric})
    except ValueError as exc:
        # an "id" column that is not all-integer is read as strings instead
        as_int = [ColumnSpec(c.name, c.index, "int" if c.kind == "id" else c.kind, c.label)
                  for c in numeric]  # fmt: skip
        err = _diagnose(path, as_int, **diag)  # type: ignore[arg-type]
        flexible = [c for c in numeric if c.kind == "id"]
        if err is not None and "integer" in err.problem and flexible:
            strings += flexible
            numeric = [c for c in numeric if c.kind != "id"]
            try:
                if numeric:
                    dt = [(c.name, numeric_of[c.kind]) for c in numeric]
                    arr = loadtxt([c.index for c in numeric], dt)
                    out.update({c.name: np.ascontiguousarray(arr[c.name]) for c in numeric})
            except ValueError as exc2:
                raise fail(exc2, cols) from None
        else:
            raise (err or fail(exc, cols)) from None
    if strings:
        try:
            arr = loadtxt([c.index for c in strings], str, ndmin=2)
        except ValueError as exc:
            raise fail(exc, cols) from None
        for j, c in enumerate(strings):
            col = np.char.strip(arr[:, j].astype(str))
            empty = col == ""
            if empty.any():
                row = int(np.flatnonzero(empty)[0])
                raise DataError(
                    f"{c.describe()} is empty",
                    path=path,
                    line=_line_of_row(path, row, skip_lines, encoding),
                    fix="fill in the id or remove the line",
                )
            out[c.name] = col
            if c.kind == "id":  # per column: integers if they all are, else strings
                with contextlib.suppress(ValueError):
                    out[c.name] = col.astype(np.int64)
    n = next(iter(out.values())).size if out else 0
    if n == 0:
        raise DataError(
            "no data lines" + (" after the header" if skip_lines else ""),
            path=path,
            fix="check that the file holds interactions",
        )
    for c in cols:
        if c.kind in ("float", "time"):
            bad = ~np.isfinite(out[c.name])
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{c.describe()} is NaN or infinite "
                    f"({int(bad.sum())} such line{'s' if bad.sum() > 1 else ''} in the file)",
                    path=path,
                    line=_line_of_row(path, row, skip_lines, encoding),
                    fix="fix or remove those lines",
                )
            if c.kind == "time":
                t = out[c.name]
                if np.all(t == np.round(t)) and np.all(np.abs(t) < 2**53):
                    out[c.name] = t.astype(np.int64)
    return out


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


def _read_delimited(
    path: Path,
    wanted: dict[str, tuple[Column | None, str]],
    *,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
) -> dict[str, np.ndarray]:
    _check_file(path)
    first = _first_line(path, encoding)
    if sep is None:
        sep = _guess_sep(path, first)
    quote = '"' if sep is not None and len(sep) == 1 else None
    fields = [f.strip().strip('"') for f in _split_line(first, sep, quote)]
    col_names = list(names) if names is not None else (fields if header else None)
    specs = _resolve(path, wanted, col_names, len(fields))
    return read_columns(
        path, specs, sep=sep, skip_lines=1 if header else 0, encoding=encoding, quotechar=quote
    )


# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def _read_parquet(path: Path, wanted: dict[str, tuple[Column | None, str]]) -> dict[str, Any]:
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
    table = pq.read_table(path, columns=sorted(set(cols.values())))
    out: dict[str, Any] = {}
    for out_name, name in cols.items():
        kind = wanted[out_name][1]
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise DataError(
                f"column {name!r} ({out_name}) has {col.null_count} missing values, the first at "
                f"row {row}",
                path=path,
                fix="fill or drop those rows",
            )
        arr = col.to_numpy()
        if kind in ("float", "time"):
            if arr.dtype.kind == "M":  # datetimes -> Unix seconds
                arr = arr.astype("datetime64[s]").astype(np.int64)
            if arr.dtype.kind not in "iufb":
                raise DataError(
                    f"column {name!r} ({out_name}) has type {col.type}, expected numbers",
                    path=path,
                    fix="convert it to a numeric type",
                )
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                row = int(np.flatnonzero(~np.isfinite(arr))[0])
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
                    f"column {name!r} ({out_name}) has type {col.type}, expected integer ids",
                    path=path,
                    fix="convert the ids to integers or pass id_type='auto'",
                )
            if kind == "str":
                arr = arr.astype(str)
        out[out_name] = arr
    if not out or next(iter(out.values())).size == 0:
        raise DataError("the table has no rows", path=path, fix="check the file")
    return out


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
) -> Interactions | Split:
    """Load interactions from a delimited text file or a Parquet file.

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
    """
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
        )
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
) -> Split:
    """Load a predefined split from two files with the same layout (see :func:`load_table`).

    Train and test share one id space: the union of the ids in both files. Test interactions
    of users or items absent from train are kept and counted in the report
    (``test_interactions_cold_user`` / ``test_interactions_cold_item``).
    """
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
    tr = _read_any(train_path, **kw)
    te = _read_any(test_path, **kw)
    return split_from_parts(
        tr, te, train_source=str(train_path), test_source=str(test_path), duplicates=duplicates
    )
