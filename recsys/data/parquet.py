"""Parquet files (read with pyarrow): whole, or in record batches of ``chunk_rows`` rows read row
group by row group, with the same checks and messages either way. A file pyarrow cannot read (a
bad footer, a corrupt page, a page whose stored checksum does not match) is one DataError."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.chunked import IdCounter, Scan, exact_in_float32
from recsys.data.columns import FLOAT32_RANGE, Column, not_float32
from recsys.data.errors import DataError
from recsys.data.ids import as_ids
from recsys.data.text_parser import check_file


def _unreadable(path: Path, exc: Exception) -> DataError:
    """The error for a Parquet file pyarrow cannot read (a bad footer, a corrupt or truncated
    page), on one line: pyarrow's messages may span several."""
    return DataError(
        f"not a readable Parquet file ({' '.join(str(exc).split())})",
        path=path,
        fix="check the file (write or download it again)",
    )


def _parquet_setup(path: Path, wanted: dict[str, tuple[Column | None, str]]) -> dict[str, str]:
    """Check the file and map each wanted output column to its Parquet column name."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading Parquet ({path}) needs pyarrow: pip install pyarrow "
            "(or install this package with the [parquet] extra)"
        ) from exc
    check_file(path)
    try:
        schema_names = list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise _unreadable(path, exc) from None
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
        bad = None
        if arr.dtype.kind == "f":
            bad = not_float32(arr) if kind == "float" else ~np.isfinite(arr)
        if bad is not None and bad.any():
            row = row0 + int(np.flatnonzero(bad)[0])
            limit = f" or {FLOAT32_RANGE}" if kind == "float" else ""
            raise DataError(
                f"column {name!r} ({out_name}) is NaN or infinite{limit} at row {row}",
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


def read_parquet(path: Path, wanted: dict[str, tuple[Column | None, str]]) -> dict[str, Any]:
    cols = _parquet_setup(path, wanted)  # checks that pyarrow is there
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(
            path, columns=sorted(set(cols.values())), page_checksum_verification=True
        )
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None
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


class ParquetSource:
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
        # (page checksums, where the writer stored them, catch corrupt pages)
        self.file = pq.ParquetFile(path, pre_buffer=False, page_checksum_verification=True)

    def _batches(self, names: list[str]) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa

        offset = 0
        batches = self.file.iter_batches(batch_size=self.chunk_rows, columns=names)
        while True:
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as exc:  # a corrupt page
                raise _unreadable(self.path, exc) from None
            if batch is None:
                return
            yield offset, batch
            offset += batch.num_rows

    def _convert(self, out_name: str, col: Any, row0: int) -> np.ndarray:
        arr = col.to_numpy(zero_copy_only=False)
        kind = self.wanted[out_name][1]
        return _parquet_array(arr, col.type, self.cols[out_name], out_name, kind, self.path, row0)

    def scan(self) -> Scan:
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
                        ids = as_ids(arr, f"{out_name}s", source, row0)
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
        return Scan.of(
            users,
            items,
            n_rows,
            values_exact=values_exact,
            has_timestamps="timestamp" in self.cols,
            times_int=times_int,
            pending=[pending[k] for k in ("user", "item", "timestamp") if k in pending],
        )

    def chunks(self) -> Iterator[dict[str, np.ndarray]]:
        source = str(self.path)
        names = sorted(set(self.cols.values()))
        for row0, batch in self._batches(names):
            out = {}
            for out_name, name in self.cols.items():
                arr = self._convert(out_name, batch.column(name), row0)
                if out_name in ("user", "item"):
                    arr = as_ids(arr, f"{out_name}s", source, row0)
                out[out_name] = arr
            yield out
