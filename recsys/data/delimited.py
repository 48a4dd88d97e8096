"""Delimited text files (CSV, TSV, any separator, also several characters such as ``"::"``)
read whole: the header and separator handling, and the columns as numpy arrays.

Every problem is a :class:`~recsys.data.errors.DataError` naming the file, the line and what to
fix; the chunked reader (:mod:`recsys.data.delimited_chunks`) reports the same ones.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.columns import Column, PathLike
from recsys.data.errors import DataError
from recsys.data.text_parser import (
    ColumnSpec,
    NeedStrings,
    block_error,
    check_file,
    decoding_error,
    find_bad_line,
    iter_lines,
    line_of_row,
    parse_block,
    split_line,
    text_encoding,
    warn_mixed_ids,
)


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
    check_file(path)
    src: Any = path
    load_sep = sep
    if sep is not None and len(sep) > 1:  # np.loadtxt needs a single-character delimiter
        try:
            with open(path, encoding=encoding) as fh:
                src = io.StringIO(fh.read().replace(sep, "\x1f"))
        except UnicodeDecodeError:
            raise decoding_error(path, encoding) from None
        load_sep = "\x1f"
    diag = dict(sep=sep, skip_lines=skip_lines, encoding=encoding, quotechar=quotechar)

    def diagnose(spec: Sequence[ColumnSpec]) -> DataError | None:
        return find_bad_line(path, spec, **diag)  # type: ignore[arg-type]

    def fail(exc: Exception, spec: Sequence[ColumnSpec]) -> DataError:
        err = diagnose(spec)
        return err or DataError(f"cannot parse the file ({exc})", path=path, fix="check its format")

    kw = dict(diagnose=diagnose, fail=fail, convert_ids=True)
    load = _loadtxt(
        src, delimiter=load_sep, skiprows=skip_lines, quotechar=quotechar, encoding=encoding
    )
    try:
        try:
            block = parse_block(load, cols, ids_as_str=False, **kw)  # type: ignore[arg-type]
        except NeedStrings:
            block = parse_block(load, cols, ids_as_str=True, **kw)  # type: ignore[arg-type]
    except UnicodeDecodeError:
        raise decoding_error(path, encoding) from None

    def line(row: int | None) -> int | None:
        return None if row is None else line_of_row(path, row, skip_lines, encoding)

    err = block_error(
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
    other = {name: (line(row), value) for name, (row, value) in block.other_id.items()}
    warn_mixed_ids(path, cols, block.int_ids, other)
    return block.columns


def _first_line(path: Path, encoding: str) -> str:
    for _, line in iter_lines(path, encoding):
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
                    fix=f"pass {out_name}_col= one of those names"
                    + (" (or sep= the file's separator)" if len(names) == 1 else ""),
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


def delimited_setup(
    path: Path,
    wanted: dict[str, tuple[Column | None, str]],
    *,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
) -> tuple[list[ColumnSpec], str | None, str | None, str]:
    """Check the file, guess the separator, resolve the columns: (specs, sep, quote char, the
    encoding to read it with; see :func:`~recsys.data.text_parser.text_encoding`)."""
    check_file(path)
    encoding = text_encoding(path, encoding)
    first = _first_line(path, encoding)
    if sep is None:
        sep = _guess_sep(path, first)
    quote = '"' if sep is not None and len(sep) == 1 else None
    fields = [f.strip().strip('"') for f in split_line(first, sep, quote)]
    col_names = list(names) if names is not None else (fields if header else None)
    return _resolve(path, wanted, col_names, len(fields)), sep, quote, encoding


def read_delimited(
    path: Path,
    wanted: dict[str, tuple[Column | None, str]],
    *,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
) -> dict[str, np.ndarray]:
    specs, sep, quote, encoding = delimited_setup(
        path, wanted, sep=sep, header=header, names=names, encoding=encoding
    )
    return read_columns(
        path, specs, sep=sep, skip_lines=1 if header else 0, encoding=encoding, quotechar=quote
    )
