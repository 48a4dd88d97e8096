"""Generic tabular loaders: delimited text (CSV/TSV/any separator) and Parquet.

"Bring your own data": name the user, item and (optionally) value and timestamp columns, and
optionally a separate test file for a predefined split::

    data = load_table("events.csv", user_col="user", item_col="item", value_col="clicks")
    split = load_table_split("train.tsv", "test.tsv", user_col=0, item_col=1, header=False)

This module chooses the reader (format, whole or chunked); each format has its own module
(:mod:`recsys.data.delimited` and :mod:`recsys.data.delimited_chunks` for text, over the shared
:mod:`recsys.data.text_parser`; :mod:`recsys.data.parquet`). Parsing uses numpy's C reader
(``np.loadtxt``), so it is fast; only when that fails does a line-by-line pass run to find the
first bad line and report it precisely. Every problem is a
:class:`~recsys.data.errors.DataError` naming the file, the line and what to fix.

Files are read ``chunk_rows`` lines (Parquet: rows, row group by row group) at a time, in two
passes (ids and row counts first, then the CSR arrays are filled in place; see
:mod:`recsys.data.chunked`), so the raw table and the matrix are never in memory together; the
result and the errors are those of reading the whole file at once (``chunk_rows=None``).

Ids are read as integers when every id in the column is an int64 integer, otherwise as strings
(``id_type="auto"``; a column of integers with some other ids logs a warning naming the first
line that is not an integer); force one with ``id_type="int"`` / ``"str"``. Values and
timestamps must be finite numbers (timestamps as numbers, e.g. Unix seconds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recsys.data.chunked import Scan, build_from_chunks
from recsys.data.columns import Column, PathLike
from recsys.data.csr import DUPLICATE_RULES, Duplicates
from recsys.data.delimited import delimited_setup, read_delimited
from recsys.data.delimited_chunks import TextSource
from recsys.data.interactions import Interactions
from recsys.data.parquet import ParquetSource, read_parquet
from recsys.data.predefined import predefined_split, split_from_parts, union_ids
from recsys.data.splits import Split

__all__ = ["DEFAULT_CHUNK_ROWS", "load_table", "load_table_split"]

IdType = Literal["auto", "int", "str"]


#: Lines (text) or rows (Parquet) parsed at a time by :func:`load_table`.
DEFAULT_CHUNK_ROWS = 1_000_000


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
    src: TextSource | ParquetSource,
    scan: Scan,
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


def _id_kind(id_type: IdType) -> str:
    if id_type not in ("auto", "int", "str"):
        raise ValueError(f"id_type must be 'auto', 'int' or 'str', got {id_type!r}")
    return {"auto": "id", "int": "int", "str": "str"}[id_type]


@dataclass(frozen=True)
class _Layout:
    """Where a table's columns are and how its file is written (shared by train and test)."""

    user_col: Column
    item_col: Column
    value_col: Column | None
    timestamp_col: Column | None
    sep: str | None
    header: bool
    names: Sequence[str] | None
    encoding: str
    id_type: IdType
    format: str | None

    def wanted(self) -> dict[str, tuple[Column | None, str]]:
        """Output column -> (the file's column, the kind it is read as)."""
        kind = _id_kind(self.id_type)
        return {
            "user": (self.user_col, kind),
            "item": (self.item_col, kind),
            "value": (self.value_col, "float"),
            "timestamp": (self.timestamp_col, "time"),
        }

    def text_options(self) -> dict[str, Any]:
        """The separator, header, column names and encoding of a delimited text file."""
        return {
            "sep": self.sep,
            "header": self.header,
            "names": self.names,
            "encoding": self.encoding,
        }

    def is_parquet(self, path: Path) -> bool:
        """Parquet for ``.parquet`` / ``.pq`` files or ``format="parquet"``, else text."""
        fmt = self.format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "text")
        if fmt == "parquet":
            return True
        if fmt != "text":
            raise ValueError(f"format must be 'text' or 'parquet', got {self.format!r}")
        return False


def _read_any(path: PathLike, layout: _Layout) -> dict[str, Any]:
    """The wanted columns of a whole file as arrays (the ``chunk_rows=None`` reader)."""
    path = Path(path)
    wanted = layout.wanted()
    if layout.is_parquet(path):
        return read_parquet(path, wanted)
    return read_delimited(path, wanted, **layout.text_options())


def _open_chunked(path: PathLike, layout: _Layout, chunk_rows: int) -> TextSource | ParquetSource:
    """The chunked counterpart of ``_read_any``: same checks before any data is read."""
    path = Path(path)
    wanted = layout.wanted()
    if layout.is_parquet(path):
        return ParquetSource(path, wanted, chunk_rows)
    specs, sep, quote, encoding = delimited_setup(path, wanted, **layout.text_options())
    return TextSource(
        path,
        specs,
        sep=sep,
        skip_lines=1 if layout.header else 0,
        encoding=encoding,
        quotechar=quote,
        chunk_rows=chunk_rows,
    )


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
    layout = _Layout(
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
    if test_path is not None:
        return _load_split(path, test_path, layout, duplicates, chunk_rows)
    if chunk_rows is not None:
        src = _open_chunked(path, layout, int(chunk_rows))
        scan = src.scan()
        _check_duplicates(duplicates)
        if scan.pending:
            raise scan.pending[0]
        return _build(src, scan, scan.user_ids, scan.item_ids, duplicates)
    cols = _read_any(path, layout)
    return Interactions.from_columns(
        cols["user"],
        cols["item"],
        cols.get("value"),
        cols.get("timestamp"),
        duplicates=duplicates,
        source=str(path),
    )


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
    layout = _Layout(
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
    return _load_split(train_path, test_path, layout, duplicates, chunk_rows)


def _load_split(
    train_path: PathLike,
    test_path: PathLike,
    layout: _Layout,
    duplicates: Duplicates,
    chunk_rows: int | None,
) -> Split:
    """The split of :func:`load_table_split`, the files read in chunks or whole."""
    if chunk_rows is not None:
        tr_src = _open_chunked(train_path, layout, int(chunk_rows))
        tr_scan = tr_src.scan()
        te_src = _open_chunked(test_path, layout, int(chunk_rows))
        te_scan = te_src.scan()
        _check_duplicates(duplicates)
        for scan in (tr_scan, te_scan):
            if scan.pending:
                raise scan.pending[0]
        users = union_ids(tr_scan.user_ids, te_scan.user_ids)
        items = union_ids(tr_scan.item_ids, te_scan.item_ids)
        return predefined_split(
            _build(tr_src, tr_scan, users, items, duplicates),
            _build(te_src, te_scan, users, items, duplicates),
            train_source=str(train_path),
            test_source=str(test_path),
        )
    tr = _read_any(train_path, layout)
    te = _read_any(test_path, layout)
    return split_from_parts(
        tr, te, train_source=str(train_path), test_source=str(test_path), duplicates=duplicates
    )
