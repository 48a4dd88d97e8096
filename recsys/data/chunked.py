"""Build an :class:`Interactions` from chunks of rows, never holding all rows at once.

:meth:`Interactions.from_columns` needs every row in memory (plus a sort key and an ordering of
the same length) before it can build the CSR matrix; for a file of hundreds of millions of rows
that is several times the size of the result. The chunked loaders of
:mod:`recsys.data.tables` read the file twice instead:

1. **scan**: every chunk is parsed and checked; :class:`IdCounter` keeps the sorted distinct user
   and item ids and how many rows each user has, so the CSR row pointer is known before any entry
   is stored;
2. **fill** (:func:`build_from_chunks`): every chunk is parsed again and its entries are written
   straight into preallocated CSR arrays (column index, value, timestamp) at their user's next
   free slot, in file order. Afterwards each block of rows is sorted by item and duplicate
   (user, item) pairs are combined in place, with the rules of ``from_columns``.

Peak memory is the final arrays (4 bytes of column index + 4 or 8 of value + 8 of timestamp per
row) plus one chunk, instead of the whole table plus its sort. The result equals
``from_columns`` on all rows at once (same ids, order, values, timestamps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.data.columns import stored_values
from recsys.data.csr import DUPLICATE_RULES, csr
from recsys.data.errors import DataError
from recsys.data.interactions import Interactions

__all__ = ["IdCounter", "Scan", "build_from_chunks", "exact_in_float32"]


class IdCounter:
    """The sorted distinct ids seen so far and how many rows had each (merged chunk by chunk)."""

    def __init__(self) -> None:
        self.ids: np.ndarray | None = None
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """Count the ids of one chunk (int64 or str, the same kind every time)."""
        ids, counts = np.unique(values, return_counts=True)
        if self.ids is None or self.ids.size == 0:
            self.ids, self.counts = ids, counts.astype(np.int64)
            return
        self.ids, self.counts = _merge_counts(
            np.concatenate((self.ids, ids)), np.concatenate((self.counts, counts))
        )

    def as_int(self) -> None:
        """Turn string ids that are all integers into int64 ids (``"007"`` and ``"7"`` become
        the same id, like the whole-file reader's conversion does)."""
        if self.ids is not None and self.ids.dtype.kind == "U":
            self.ids, self.counts = _merge_counts(self.ids.astype(np.int64), self.counts)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct ids, rows per id); empty int64 arrays when nothing was added."""
        ids = np.zeros(0, dtype=np.int64) if self.ids is None else self.ids
        return ids, self.counts


def _merge_counts(ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ids, kind="stable")
    ids, counts = ids[order], counts[order]
    start = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    return ids[start], np.add.reduceat(counts, start) if ids.size else counts


def exact_in_float32(values: np.ndarray) -> bool:
    """Whether every value survives a round trip through float32 (then float32 storage loses
    nothing, even when duplicates are summed)."""
    if values.dtype == np.float32 or values.dtype.kind == "b":
        return True
    return bool(np.array_equal(values.astype(np.float32).astype(values.dtype), values))


def _changed(what: str, source: str | None) -> DataError:
    return DataError(
        f"the {what} ids differ between the two passes over the file",
        path=source,
        fix="do not change the file while it is being loaded",
    )


def _encoder(ids: np.ndarray, what: str, source: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping external ids (all among the sorted ``ids``) to their positions: a
    lookup table for integer ids in a compact range (the usual case), else a binary search."""
    if ids.dtype.kind in "iu" and ids.size:
        lo, span = int(ids[0]), int(ids[-1]) - int(ids[0]) + 1
        if span <= 4 * ids.size + (1 << 20):
            table = np.full(span, -1, dtype=np.int64)
            table[ids - lo] = np.arange(ids.size)

            def lookup(values: np.ndarray) -> np.ndarray:
                if values.size == 0:
                    return np.zeros(0, dtype=np.int64)
                off = values - lo
                if int(off.min()) < 0 or int(off.max()) >= span:
                    raise _changed(what, source)
                codes = table[off]
                if int(codes.min()) < 0:
                    raise _changed(what, source)
                return codes

            return lookup

    def search(values: np.ndarray) -> np.ndarray:
        if ids.size == 0:
            if values.size:
                raise _changed(what, source)
            return np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(ids, values), ids.size - 1)
        if not np.array_equal(ids[pos], values):
            raise _changed(what, source)
        return pos

    return search


def build_from_chunks(
    chunks: Callable[[], Iterable[Mapping[str, Any]]],
    *,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    user_rows: np.ndarray,
    duplicates: str = "sum",
    value_dtype: Any = np.float32,
    timestamp_dtype: Any = None,
    source: str | None = None,
    block_entries: int = 1 << 20,
) -> Interactions:
    """The :class:`Interactions` of the rows that ``chunks()`` yields, built in place.

    Args:
        chunks: called once; yields dicts with ``"user"`` and ``"item"`` (external ids, same
            kinds as ``user_ids`` / ``item_ids``), optionally ``"value"`` (numbers; 1.0 when
            absent) and ``"timestamp"`` (numbers, when ``timestamp_dtype`` is given).
        user_ids, item_ids: sorted distinct external ids (the id maps of the result); every id
            in the chunks must be among them.
        user_rows: rows per user (aligned with ``user_ids``) over all chunks, duplicates
            included: the space reserved per CSR row.
        duplicates: "sum", "max", "first" or "last", as in :meth:`Interactions.from_columns`
            (a combined pair keeps its latest timestamp).
        value_dtype: float32, or float64 when values must be summed exactly (they are rounded to
            float32 after combining, like ``from_columns`` does).
        timestamp_dtype: int64 or float64 storage for timestamps, None without timestamps.
        source: the file, for error messages.
        block_entries: entries sorted at a time when combining duplicates (bounds the scratch
            memory).
    """
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_RULES}, got {duplicates!r}")
    n_users, n_items = int(user_ids.size), int(item_ids.size)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(user_rows, out=indptr[1:])
    total = int(indptr[-1])
    indices = np.empty(total, dtype=np.int32)
    data = np.empty(total, dtype=value_dtype)
    times = None if timestamp_dtype is None else np.empty(total, dtype=timestamp_dtype)
    cursor = indptr[:-1].copy()
    encode_user = _encoder(user_ids, "user", source)
    encode_item = _encoder(item_ids, "item", source)
    for chunk in chunks():
        u = encode_user(np.asarray(chunk["user"]))
        i = encode_item(np.asarray(chunk["item"]))
        if u.size:
            _place(chunk, u, i, cursor, indptr, indices, data, times, source)
        del u, i
    if not np.array_equal(cursor, indptr[1:]):
        raise DataError(
            "the file has fewer rows than the first pass over it counted",
            path=source,
            fix="do not change the file while it is being loaded",
        )
    nnz, row_nnz = _combine_in_place(
        indptr, indices, data, times, n_items, duplicates, max(1, int(block_entries))
    )
    if nnz < total:  # drop the room the combined duplicates took (in place where possible)
        indices, data = _shrink(indices, nnz), _shrink(data, nnz)
        times = None if times is None else _shrink(times, nnz)
    out_ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=out_ptr[1:])
    if out_ptr[-1] < np.iinfo(np.int32).max:
        out_ptr = out_ptr.astype(np.int32)
    data = stored_values(data, source)
    shape = (n_users, n_items)
    matrix = csr(data, indices, out_ptr, shape)
    tmat = None if times is None else csr(times, indices, out_ptr, shape)
    return Interactions(matrix, user_ids, item_ids, tmat, None, source)


def _place(
    chunk: Mapping[str, Any],
    u: np.ndarray,
    i: np.ndarray,
    cursor: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    times: np.ndarray | None,
    source: str | None,
) -> None:
    """Write one chunk's rows (user codes ``u``, item codes ``i``) into the CSR arrays and move
    each user's ``cursor`` (next free slot) on; raises when a user outgrows the counted rows."""
    # each row goes to its user's next free slot; a stable sort keeps the file order
    order = np.argsort(u, kind="stable")
    us = u[order]
    start = np.flatnonzero(np.concatenate(([True], us[1:] != us[:-1])))
    length = np.diff(np.append(start, us.size))
    rank = np.arange(us.size) - np.repeat(start, length)
    first = us[start]
    if np.any(cursor[first] + length > indptr[first + 1]):
        raise DataError(
            "a user has more rows than the first pass over the file counted",
            path=source,
            fix="do not change the file while it is being loaded",
        )
    pos = cursor[us] + rank
    cursor[first] += length
    indices[pos] = i[order]
    values = chunk.get("value")
    data[pos] = 1.0 if values is None else np.asarray(values)[order]
    if times is not None:
        times[pos] = np.asarray(chunk["timestamp"])[order]


def _shrink(arr: np.ndarray, n: int) -> np.ndarray:
    try:
        arr.resize(n, refcheck=False)  # realloc: no second full-size copy
        return arr
    except ValueError:  # pragma: no cover - arrays here own their data
        return arr[:n].copy()


def _combine_in_place(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    times: np.ndarray | None,
    n_items: int,
    duplicates: str,
    block_entries: int,
) -> tuple[int, np.ndarray]:
    """Sort each row by item and combine duplicate items, block of rows by block of rows,
    compacting towards the front of the arrays. Returns (entries kept, entries per row)."""
    n_users = indptr.size - 1
    row_nnz = np.zeros(n_users, dtype=np.int64)
    write = 0
    r0 = 0
    while r0 < n_users:
        # rows r0..r1-1 hold about block_entries entries (at least one row)
        r1 = int(np.searchsorted(indptr, indptr[r0] + block_entries, side="right")) - 1
        r1 = min(max(r1, r0 + 1), n_users)
        a, b = int(indptr[r0]), int(indptr[r1])
        counts = np.diff(indptr[r0 : r1 + 1])
        rows = np.repeat(np.arange(r1 - r0, dtype=np.int64), counts)
        key = rows * max(n_items, 1) + indices[a:b]
        if key.size < 2 or bool(np.all(key[1:] > key[:-1])):  # already sorted, no duplicates
            m = b - a
            if write != a:
                indices[write : write + m] = indices[a:b]
                data[write : write + m] = data[a:b]
                if times is not None:
                    times[write : write + m] = times[a:b]
            row_nnz[r0:r1] = counts
        else:
            order = np.argsort(key, kind="stable")  # stable: duplicates stay in file order
            key_s = key[order]
            start = np.flatnonzero(np.concatenate(([True], key_s[1:] != key_s[:-1])))
            m = int(start.size)
            vals = data[a:b][order]
            if duplicates == "sum":
                combined = np.add.reduceat(vals.astype(np.float64), start)
            elif duplicates == "max":
                combined = np.maximum.reduceat(vals, start)
            elif duplicates == "first":
                combined = vals[start]
            else:
                combined = vals[np.append(start[1:], key_s.size) - 1]
            t_comb = None if times is None else np.maximum.reduceat(times[a:b][order], start)
            ukey = key_s[start]
            urow = ukey // max(n_items, 1)
            indices[write : write + m] = ukey - urow * max(n_items, 1)
            data[write : write + m] = combined
            if times is not None:
                times[write : write + m] = t_comb
            row_nnz[r0:r1] = np.bincount(urow, minlength=r1 - r0)
        write += m
        r0 = r1
    return write, row_nnz


@dataclass
class Scan:
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

    @classmethod
    def of(
        cls,
        users: IdCounter,
        items: IdCounter,
        n_rows: int,
        *,
        values_exact: bool,
        has_timestamps: bool,
        times_int: bool,
        pending: list[DataError],
    ) -> Scan:
        """The result of a first pass from its id counters and what it saw of the columns:
        values are stored as float32 when every one is exact in it (else float64), timestamps
        as int64 when every one is an integer (else float64)."""
        user_ids, user_rows = users.result()
        return cls(
            user_ids,
            user_rows,
            items.result()[0],
            n_rows,
            np.float32 if values_exact else np.float64,
            None if not has_timestamps else (np.int64 if times_int else np.float64),
            pending,
        )
