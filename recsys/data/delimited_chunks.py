"""Delimited text files read ``chunk_rows`` lines at a time, twice (scan, then chunks): the text
source of :func:`recsys.data.tables.load_table` (see :mod:`recsys.data.chunked`)."""

from __future__ import annotations

import collections
import itertools
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.chunked import IdCounter, Scan, exact_in_float32
from recsys.data.errors import DataError
from recsys.data.text_parser import (
    Block,
    ColumnSpec,
    NeedStrings,
    block_error,
    decoding_error,
    find_bad_line,
    line_of_row,
    parse_block,
    warn_mixed_ids,
)


class _LineCursor:
    """One handle on a text file handing out ``chunk_rows`` lines at a time as an iterator that
    numpy's reader consumes directly (no list of lines, no joined copy of the chunk)."""

    def __init__(self, src: TextSource) -> None:
        # strict decoding, as the whole-file reader: see text_parser.decoding_error
        self.fh = open(src.path, encoding=src.encoding)  # noqa: SIM115
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


class TextSource:
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

    def _blocks(self) -> Iterator[tuple[int, Block]]:
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
                block = parse_block(
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
        except UnicodeDecodeError:
            raise decoding_error(self.path, self.encoding) from None
        finally:
            for cursor in cursors.values():
                cursor.close()

    def _diagnose(self, spec: Sequence[ColumnSpec]) -> DataError | None:
        return find_bad_line(
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
        return line_of_row(self.path, row, self.skip_lines, self.encoding)

    def scan(self) -> Scan:
        try:
            return self._scan()
        except NeedStrings:
            self.ids_as_str = True
            return self._scan()

    def _scan(self) -> Scan:
        users, items = IdCounter(), IdCounter()
        empty_row: dict[str, int] = {}
        nonfinite: dict[str, tuple[int, int]] = {}
        int_ids: dict[str, bool] = {}
        other_id: dict[str, tuple[int, str]] = {}
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
            for name, any_int in block.int_ids.items():
                int_ids[name] = int_ids.get(name, False) or any_int
            for name, (row, value) in block.other_id.items():
                other_id.setdefault(name, (rows_before + row, value))
            cols = block.columns
            users.add(cols["user"])
            items.add(cols["item"])
            if "value" in cols:
                values_exact = values_exact and exact_in_float32(cols["value"])
            if "timestamp" in cols:
                times_int = times_int and cols["timestamp"].dtype.kind == "i"
        err = block_error(
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
        others = {name: (self._line(row), value) for name, (row, value) in other_id.items()}
        warn_mixed_ids(self.path, self.specs, int_ids, others)
        self.ids_to_int = [n for n in int_ids if n not in other_id] if self.ids_as_str else []
        for name, counter in (("user", users), ("item", items)):
            if name in self.ids_to_int:
                counter.as_int()
        return Scan.of(
            users,
            items,
            n_rows,
            values_exact=values_exact,
            has_timestamps="timestamp" in {c.name for c in self.specs},
            times_int=times_int,
            pending=[],
        )

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for _, block in self._blocks():
            cols = block.columns
            for name in self.ids_to_int:
                cols[name] = cols[name].astype(np.int64)
            yield cols
