"""The parser of delimited text shared by the whole-file and the chunked readers.

Parsing uses numpy's C reader (``np.loadtxt``), so it is fast; only when that fails does a
line-by-line pass (:func:`find_bad_line`) run to find the first bad line and report it
precisely.
A :class:`Block` holds the columns parsed from a whole file or one chunk of it, plus the problems
that are reported only after everything is parsed, so that both readers raise the same error.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.data.columns import FLOAT32_RANGE, not_float32
from recsys.data.errors import DataError, describe
from recsys.data.ids import int_id_problem, integer_ids

log = logging.getLogger(__name__)

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


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", path=path, fix="check the path")
    if path.is_dir():
        raise DataError("expected a file but found a folder", path=path, fix="pass the file")
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path=path, fix="check that it was written fully")


#: byte-order marks of the encodings a file read as UTF-8 may really be in (UTF-32 first: its
#: little-endian mark starts with UTF-16's)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def text_encoding(path: Path, encoding: str) -> str:
    """The codec to read ``path`` with: ``encoding``, but ``utf-8-sig`` for a UTF-8 file that
    starts with a byte-order mark (else the mark sticks to the first id), and an error naming the
    encoding to pass for a file read as UTF-8 that starts with a UTF-16 or UTF-32 mark."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}",
            path=path,
            fix="pass a Python codec name such as encoding='utf-8' or encoding='latin-1'",
        ) from None
    if name != "utf-8":
        return encoding
    with open(path, "rb") as fh:
        head = fh.read(4)
    for bom, other in _BOMS:
        if head.startswith(bom):
            raise DataError(
                f"the file is {other} text (it starts with a {other} byte-order mark) but is "
                f"read as {encoding}",
                path=path,
                fix=f"pass encoding='{other}' or re-encode the file to UTF-8",
            )
    return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else encoding


def decoding_error(path: Path, encoding: str) -> DataError:
    """The error for a file that is not valid text in ``encoding``, at its first bad line.

    Called when a reader hit a ``UnicodeDecodeError``; the readers decode strictly, since
    replacing undecodable bytes would make different ids equal.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    line = None
    bad = b""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                line, bad = n, exc.object[exc.start : exc.end]
                break
    return DataError(
        f"the file is not {encoding} text" + (f" (bytes {bad!r})" if bad else ""),
        path=path,
        line=line,
        fix="pass its encoding (e.g. encoding='latin-1') or re-encode the file to UTF-8",
    )


def iter_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline) for every line of a text file."""
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        for n, line in enumerate(fh, start=1):
            yield n, line.rstrip("\r\n")


def split_line(line: str, sep: str | None, quotechar: str | None) -> list[str]:
    if quotechar and sep and len(sep) == 1:
        return next(csv.reader([line], delimiter=sep, quotechar=quotechar))
    return line.split(sep)


def _check_field(value: str, kind: str) -> str | None:
    """None if ``value`` is acceptable for ``kind``, else a description of the problem."""
    v = value.strip()
    if v == "":
        return "is empty"
    if kind == "int":
        problem = int_id_problem(v)
        if problem is not None:
            return f"{problem}: {value!r}"
    elif kind in ("float", "time"):
        try:
            x = float(v)
        except ValueError:
            return f"is not a number: {value!r}"
        if not np.isfinite(x):
            return f"is not a finite number: {value!r}"
    return None


def find_bad_line(
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
    for n, line in iter_lines(path, encoding):
        if n <= skip_lines or not line.strip():
            continue
        row += 1
        fields = split_line(line, sep, quotechar)
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


def line_of_row(path: Path, row: int, skip_lines: int, encoding: str) -> int | None:
    """1-based line number of the 0-based data row ``row`` (blank lines are not rows)."""
    r = -1
    for n, line in iter_lines(path, encoding):
        if n <= skip_lines or not line.strip():
            continue
        r += 1
        if r == row:
            return n
    return None


@dataclass
class Block:
    """The columns parsed from one block of lines (a whole file or one chunk of it), plus the
    problems found in them that :func:`read_columns` reports only after parsing everything, so a
    chunked read can find and report the same one. Rows are 0-based within the block."""

    columns: dict[str, np.ndarray]
    n_rows: int
    strings: list[ColumnSpec]  # the columns read as strings, in the order they are checked
    empty: dict[str, int]  # string column -> first row with an empty id
    #: number column -> (first row that is NaN/inf or, for values, beyond float32; how many)
    nonfinite: dict[str, tuple[int, int]]
    int_ids: dict[str, bool]  # "id" columns read as strings: whether any id is an integer
    other_id: dict[str, tuple[int, str]]  # ... the first id that is not one: (row, id)


class NeedStrings(Exception):
    """An integer-or-string ("id") column holds a non-integer: read the id columns as strings."""


def parse_block(
    loadtxt: Callable[..., np.ndarray],
    cols: Sequence[ColumnSpec],
    *,
    ids_as_str: bool,
    convert_ids: bool,
    diagnose: Callable[[Sequence[ColumnSpec]], DataError | None],
    fail: Callable[[Exception, Sequence[ColumnSpec]], DataError],
) -> Block:
    """Parse one block with numpy's C reader (``loadtxt(usecols, dtype, ndmin)``).

    ``diagnose(spec)`` scans the *whole file* for the first bad line (so a chunk reports the same
    line the whole-file read would) and ``fail(exc, spec)`` turns a parse error into a DataError.
    With ``ids_as_str`` the "id" columns are read as strings (after a non-integer id was found);
    ``convert_ids`` then turns each "id" column that is all integers back into int64 (the
    whole-file rule), otherwise ``other_id`` only records the first id that is not one. Without
    ``ids_as_str`` a non-integer "id" raises :class:`NeedStrings`.
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
    except UnicodeDecodeError:
        raise  # the caller names the line (see decoding_error)
    except ValueError as exc:
        if ids_as_str:
            raise fail(exc, cols) from None
        # an "id" column that is not all-integer is read as strings instead
        as_int = [ColumnSpec(c.name, c.index, "int" if c.kind == "id" else c.kind, c.label)
                  for c in numeric]  # fmt: skip
        err = diagnose(as_int)
        flexible = [c for c in numeric if c.kind == "id"]
        if err is not None and "integer" in err.problem and flexible:
            raise NeedStrings from None
        raise (err or fail(exc, cols)) from None
    empty: dict[str, int] = {}
    int_ids: dict[str, bool] = {}
    other_id: dict[str, tuple[int, str]] = {}
    if strings:
        try:
            arr = loadtxt([c.index for c in strings], str, ndmin=2)
        except UnicodeDecodeError:
            raise
        except ValueError as exc:
            raise fail(exc, cols) from None
        for j, c in enumerate(strings):
            col = np.char.strip(arr[:, j].astype(str))
            is_empty = col == ""
            if is_empty.any():
                empty[c.name] = int(np.flatnonzero(is_empty)[0])
            out[c.name] = col
            if c.kind == "id" and c.name not in empty:  # integers if they all are, else strings
                is_int = integer_ids(col)
                if is_int.all():
                    if convert_ids:
                        out[c.name] = col.astype(np.int64)
                else:
                    row = int(np.flatnonzero(~is_int)[0])
                    other_id[c.name] = (row, str(col[row]))
                int_ids[c.name] = bool(is_int.any())
    n = next(iter(out.values())).size if out else 0
    return Block(out, n, strings, empty, _check_numbers(cols, out), int_ids, other_id)


def _check_numbers(
    cols: Sequence[ColumnSpec], out: dict[str, np.ndarray]
) -> dict[str, tuple[int, int]]:
    """The number columns with unusable entries: name -> (first such row, how many). Values
    are stored as float32, so for them that includes numbers beyond its range; timestamps that
    are all integral (and exact in float64) become int64 in ``out``."""
    nonfinite: dict[str, tuple[int, int]] = {}
    for c in cols:
        if c.kind in ("float", "time"):
            bad = not_float32(out[c.name]) if c.kind == "float" else ~np.isfinite(out[c.name])
            if bad.any():
                nonfinite[c.name] = (int(np.flatnonzero(bad)[0]), int(bad.sum()))
            elif c.kind == "time":
                t = out[c.name]
                if np.all(t == np.round(t)) and np.all(np.abs(t) < 2**53):
                    out[c.name] = t.astype(np.int64)
    return nonfinite


def block_error(
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
            limit = f" or {FLOAT32_RANGE}" if c.kind == "float" else ""
            return DataError(
                f"{c.describe()} is NaN or infinite{limit} "
                f"({count} such line{'s' if count > 1 else ''} in the file)",
                path=path,
                line=line,
                fix="fix or remove those lines",
            )
    return None


def warn_mixed_ids(
    path: Path,
    cols: Sequence[ColumnSpec],
    int_ids: dict[str, bool],
    other_id: dict[str, tuple[int | None, str]],
) -> None:
    """Log the line that made an id column strings while other ids in it are integers.

    ``id_type="auto"`` reads such a column as strings, which is right for labels but silently
    wrong for a numeric column with one bad line: ``"12"`` no longer equals the id ``12`` of
    another file or of a model. ``other_id`` maps a column to (line, first non-integer id).
    """
    for c in cols:
        if c.name in other_id and int_ids.get(c.name):
            line, value = other_id[c.name]
            log.warning(
                describe(
                    f"{c.describe()}: {value!r} is not an int64 integer, so every id of the column "
                    "is read as a string although the others are integers",
                    path=path,
                    line=line,
                    fix="pass id_type='str' to read the ids as strings on purpose, or fix this "
                    "line (id_type='int' rejects such lines)",
                )
            )
