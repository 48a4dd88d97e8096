"""Columns of an interaction table: how the loaders name them, and the checks of the value,
timestamp and title columns given to :meth:`Interactions.from_columns`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recsys.data.errors import DataError

PathLike = str | os.PathLike[str]
#: a column of a table: its name (with a header, or ``names``) or its 0-based position
Column = str | int

#: what the messages call the range of a value: matrices store values as float32
FLOAT32_RANGE = f"beyond float32's range of +-{float(np.finfo(np.float32).max):.7g}"


def not_float32(values: np.ndarray) -> np.ndarray:
    """A mask of the values a float32 matrix cannot hold: NaN, infinite, or so large that
    float32 rounds them to infinity (1e39 read as float64 is finite, stored it is inf)."""
    with np.errstate(over="ignore"):
        return ~np.isfinite(np.asarray(values, dtype=np.float64).astype(np.float32))


def stored_values(combined: np.ndarray, source: str | None) -> np.ndarray:
    """The values of the matrix as float32, once repeated pairs are combined.

    Every value read was checked to fit float32, so a value that does not now is a sum of
    repeated (user, item) pairs (``duplicates="sum"``) that went beyond float32's range.
    """
    with np.errstate(over="ignore"):
        out = combined.astype(np.float32, copy=False)
    if not np.all(np.isfinite(out)):
        raise DataError(
            f"the values of a repeated (user, item) pair sum to a number {FLOAT32_RANGE}",
            path=source,
            fix="pass duplicates='max' or 'last', or scale the values down",
        )
    return out


def value_column(
    values: Sequence[float] | np.ndarray | None, u: np.ndarray, i: np.ndarray, source: str | None
) -> np.ndarray:
    """The values as float64, one per (user ``u``, item ``i``) row; 1.0 each when omitted.

    Rejects non-numeric columns, a length other than the ids', and NaN, infinite or values beyond
    float32 (the matrix's type; with the first bad row and its user and item).
    """
    n = u.size
    if values is None:
        return np.ones(n, dtype=np.float64)
    v = np.asarray(values)
    if v.dtype.kind not in "iufb":
        raise DataError(
            f"values must be numeric, got {v.dtype}",
            path=source,
            fix="convert the value column to numbers",
        )
    v = v.astype(np.float64, copy=False).reshape(-1)
    if v.size != n:
        raise DataError(f"values has {v.size} entries for {n} interactions", path=source)
    for bad, what in ((~np.isfinite(v), "NaN or infinite"), (not_float32(v), FLOAT32_RANGE)):
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{int(bad.sum())} value(s) are {what}, the first at row {k} "
                f"(user {u[k]}, item {i[k]}: {v[k]})",
                path=source,
                fix="remove or fill those rows",
            )
    return v


def timestamp_column(
    timestamps: Sequence[float] | np.ndarray | None, n: int, source: str | None
) -> np.ndarray | None:
    """The timestamps as int64 (float64 unless every one is integral and exact), or None.

    Rejects non-numeric columns, a length other than ``n``, and NaN or infinite timestamps.
    """
    if timestamps is None:
        return None
    t = np.asarray(timestamps).reshape(-1)
    if t.dtype.kind not in "iuf":
        raise DataError(
            f"timestamps must be numeric, got {t.dtype}",
            path=source,
            fix="convert them to numbers such as Unix seconds",
        )
    if t.size != n:
        raise DataError(f"timestamps has {t.size} entries for {n} rows", path=source)
    if t.dtype.kind == "f":
        if not np.all(np.isfinite(t)):
            k = int(np.flatnonzero(~np.isfinite(t))[0])
            raise DataError(
                f"a timestamp is NaN or infinite at row {k}",
                path=source,
                fix="remove or fill those rows",
            )
        if np.all(t == np.round(t)) and np.all(np.abs(t) < 2**53):
            t = t.astype(np.int64)
        return t
    return t.astype(np.int64, copy=False)


def title_column(
    item_titles: Mapping[Any, str] | Sequence[str] | np.ndarray,
    iids: np.ndarray,
    item_ids: Sequence[Any] | np.ndarray | None,
) -> np.ndarray:
    """A title per item of the id map ``iids``: from a mapping id -> title ("" where missing),
    or a sequence aligned with the caller's ``item_ids`` (which must then be given)."""
    if isinstance(item_titles, Mapping):
        titles = np.array([str(item_titles.get(k, "")) for k in iids.tolist()], dtype=str)
        if titles.size == 0:
            titles = np.zeros(0, dtype="<U1")
        return titles
    if item_ids is None:
        raise ValueError("item_titles as a sequence needs item_ids to align with")
    return np.asarray(item_titles).astype(str)
