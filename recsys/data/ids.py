"""External ids: normalising id columns, the sorted id maps, and encoding ids as internal codes.

An id column holds int64 or str ids; anything else (floats with fractions, NaN, nested objects)
is rejected with the row it was found at. Internal codes 0..n-1 follow the sorted id map.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from recsys.data.errors import DataError

_INT64 = np.iinfo(np.int64)
_INTEGER = re.compile(r"[+-]?\d+")


def int_id_problem(text: str) -> str | None:
    """None when ``text`` spells an int64 id, else what is wrong with it.

    Only plain decimal integers count (no ``1_000``, ``1e3`` or ``0x10``, which Python or numpy
    would read as other numbers). An integer beyond int64 is refused rather than converted:
    numpy's readers saturate it to int64's maximum, so distinct ids would merge.
    """
    v = text.strip()
    if not _INTEGER.fullmatch(v):
        return "is not an integer"
    if not _INT64.min <= int(v) <= _INT64.max:
        return f"is an integer outside the int64 range [{_INT64.min}, {_INT64.max}]"
    return None


def integer_ids(ids: np.ndarray) -> np.ndarray:
    """A mask of the (stripped) string ids that are int64 integers (see :func:`int_id_problem`),
    vectorised: only the rare ids of more than 18 digits are checked one by one."""
    body = np.char.lstrip(ids, "+-")
    length = np.char.str_len(body)
    ok = np.char.isdecimal(body) & (np.char.str_len(ids) - length <= 1)
    for k in np.flatnonzero(ok & (length > 18)):
        ok[k] = int_id_problem(str(ids[k])) is None
    return ok


def as_ids(values: Any, what: str, source: str | None, row0: int = 0) -> np.ndarray:
    """Normalise an array of external ids to int64 or str; reject anything else clearly.

    Numbers must be integers within int64 (a larger unsigned or float id would wrap or
    saturate, merging ids). ``row0``: the row of ``values[0]`` in its file, for the messages
    (a chunk of a column).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-d sequence, got shape {arr.shape}", path=source)
    kind = arr.dtype.kind

    def refuse(bad: np.ndarray, problem: str, fix: str) -> DataError:
        k = int(np.flatnonzero(bad)[0])
        return DataError(
            f"{what} contains {problem} ({arr[k]}) at row {row0 + k}", path=source, fix=fix
        )

    if kind in "iu":
        if kind == "u" and arr.size and arr.max() > _INT64.max:
            raise refuse(arr > _INT64.max, "an id beyond int64", "pass the ids as strings")
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        if arr.size and not np.all(np.isfinite(arr)):
            raise refuse(
                ~np.isfinite(arr), "a missing or non-finite id", "remove the rows without an id"
            )
        if arr.size and not np.all(arr == np.round(arr)):
            raise refuse(
                arr != np.round(arr), "a non-integer numeric id", "use integer or string ids"
            )
        if arr.size and not np.all(np.abs(arr) < 2.0**63):
            raise refuse(np.abs(arr) >= 2.0**63, "an id beyond int64", "pass the ids as strings")
        return arr.astype(np.int64)
    if kind == "U":
        return arr
    if kind == "S":
        return arr.astype(str)
    if kind == "O":
        conv = np.array(arr.tolist()) if arr.size else np.zeros(0, dtype=np.int64)
        if conv.dtype.kind in "iufUS":
            return as_ids(conv, what, source, row0)
    raise DataError(
        f"{what} has unsupported type {arr.dtype}",
        path=source,
        fix="pass integer or string ids",
    )


def unique_sorted(*arrays: np.ndarray) -> np.ndarray:
    """Sorted distinct values of the given arrays (a sort, which is faster here than
    ``np.unique``'s hashing for the id arrays this module sees)."""
    arr = np.sort(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
    if arr.size < 2:
        return arr
    return arr[np.concatenate(([True], arr[1:] != arr[:-1]))]


def check_unique(ids: np.ndarray, what: str, source: str | None = None) -> None:
    s = np.sort(ids)
    dup = s[1:][s[1:] == s[:-1]]
    if dup.size:
        raise DataError(
            f"{what} contains repeated ids, e.g. {unique_sorted(dup)[:5].tolist()}",
            path=source,
            fix="pass each id once",
        )


def lookup(ids: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Internal index of each query id in ``ids`` and a mask of which were found."""
    if query.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    if (ids.dtype.kind == "U") != (query.dtype.kind == "U"):
        return np.zeros(query.size, dtype=np.int64), np.zeros(query.size, dtype=bool)
    if ids.size == 0:
        return np.zeros(query.size, dtype=np.int64), np.zeros(query.size, dtype=bool)
    sorter = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids, query, sorter=sorter)
    pos = np.minimum(pos, ids.size - 1)
    idx = sorter[pos]
    found = ids[idx] == query
    return idx.astype(np.int64, copy=False), found


def dense_range(*arrays: np.ndarray) -> tuple[int, int] | None:
    """(min, span) when all arrays hold integers in a range small enough for a lookup table."""
    if any(a.dtype.kind not in "iu" for a in arrays) or any(a.size == 0 for a in arrays):
        return None
    lo = min(int(a.min()) for a in arrays)
    hi = max(int(a.max()) for a in arrays)
    span = hi - lo + 1
    return (lo, span) if span <= 4 * sum(a.size for a in arrays) + (1 << 20) else None


def encode(
    values: np.ndarray, given: np.ndarray | None, what: str, source: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Map external ids to codes 0..n-1; returns (codes, id array).

    Integer ids in a compact range (the usual case) use a lookup table: linear time, no sort.
    """
    if given is None:
        dense = dense_range(values)
        if dense is not None:
            lo, span = dense
            present = np.zeros(span, dtype=bool)
            present[values - lo] = True
            table = np.cumsum(present, dtype=np.int64) - 1
            return table[values - lo], np.flatnonzero(present).astype(np.int64) + lo
        ids, codes = np.unique(values, return_inverse=True)
        return codes.astype(np.int64, copy=False).reshape(-1), ids
    ids = as_ids(given, f"{what}_ids", source)
    check_unique(ids, f"{what}_ids", source)
    dense = dense_range(values, ids)
    if dense is not None:
        lo, span = dense
        table = np.full(span, -1, dtype=np.int64)
        table[ids - lo] = np.arange(ids.size)
        codes = table[values - lo]
        found = codes >= 0
    else:
        codes, found = lookup(ids, values)
    if not np.all(found):
        unknown = unique_sorted(values[~found])
        raise DataError(
            f"{unknown.size} {what} id(s) are not in the given {what}_ids, e.g. "
            f"{unknown[:5].tolist()}",
            path=source,
            fix=f"add them to {what}_ids or drop those rows",
        )
    return codes, ids
