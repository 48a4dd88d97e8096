"""Canonical CSR matrices: built from arrays, compared by structure, and from coded (user, item)
columns with repeated pairs combined by a duplicate rule."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from recsys.data.columns import stored_values

#: How :meth:`Interactions.from_columns` combines repeated (user, item) pairs.
DUPLICATE_RULES = ("sum", "max", "first", "last")

Duplicates = Literal["sum", "max", "first", "last"]


def structure_equal(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    """Whether two CSR matrices have the same shape and stored positions (values aside)."""
    return (
        a.shape == b.shape
        and a.nnz == b.nnz
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
    )


def csr(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """A CSR matrix over arrays already in canonical form (sorted, no duplicates): no copy, no
    check, so the caller guarantees the order."""
    m = sp.csr_matrix((data, indices, indptr), shape=shape)
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


def csr_problem(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: np.ndarray
) -> str | None:
    """What keeps these arrays from being a canonical CSR matrix, or None.

    :func:`csr` trusts its arrays, and scipy checks only their lengths: a column index out of
    range or negative, or a row pointer that goes backwards, gives wrong sums or a crash
    (negative indices made ``toarray`` segfault), so arrays read from a file are checked here.
    """
    shape = np.asarray(shape)
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or np.any(shape < 0):
        return f"the shape {shape.tolist()} is not two non-negative integers"
    n_rows, n_cols = (int(x) for x in shape)
    for name, arr in (("indptr", indptr), ("indices", indices), ("data", data)):
        if arr.ndim != 1 or arr.dtype.kind not in ("iu" if name != "data" else "iuf"):
            kind = "numbers" if name == "data" else "integers"
            return f"{name} is not a 1-d array of {kind} (dtype {arr.dtype}, shape {arr.shape})"
    if indptr.size != n_rows + 1:
        return f"indptr has {indptr.size} entries for {n_rows} rows (needs {n_rows + 1})"
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size:
        return f"indptr does not rise from 0 to the {indices.size} stored entries"
    if data.size != indices.size:
        return f"data has {data.size} entries for {indices.size} indices"
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_cols):
        return f"indices hold columns outside 0..{n_cols - 1}"
    row_start = np.zeros(indices.size, dtype=bool)
    row_start[indptr[:-1][indptr[:-1] < indices.size]] = True
    if np.any((np.diff(indices) <= 0) & ~row_start[1:]):
        return "indices are not strictly increasing within a row"
    return None


def coded_csr(
    ucode: np.ndarray,
    icode: np.ndarray,
    v: np.ndarray,
    t: np.ndarray | None,
    shape: tuple[int, int],
    duplicates: Duplicates,
    source: str | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """(values, timestamps) as canonical CSR matrices from per-interaction internal codes.

    Repeated (user, item) pairs are combined by ``duplicates`` (``"first"`` / ``"last"`` in input
    order, hence a stable sort); a combined pair keeps the latest of its timestamps. A sum beyond
    float32 is an error naming ``source``.
    """
    n = ucode.size
    n_users, n_items = shape
    key = ucode * np.int64(max(n_items, 1)) + icode
    if n < 2 or bool(np.all(key[1:] > key[:-1])):
        # already in order without duplicates (e.g. a file sorted by user and item)
        key_s, v_s = key, v
        t_s = None if t is None else t.copy()  # never share the caller's array
        start = np.arange(n)
    else:
        stable = duplicates in ("first", "last")
        order = np.argsort(key, kind="stable" if stable else None)
        key_s, v_s = key[order], v[order]
        t_s = None if t is None else t[order]
        start = np.flatnonzero(np.concatenate(([True], key_s[1:] != key_s[:-1])))
    if start.size == n:  # no duplicates: nothing to combine
        data, ts = v_s, t_s
    else:
        if duplicates == "sum":
            data = np.add.reduceat(v_s, start)
        elif duplicates == "max":
            data = np.maximum.reduceat(v_s, start)
        elif duplicates == "first":
            data = v_s[start]
        else:
            end = np.concatenate((start[1:], [n])) - 1
            data = v_s[end]
        ts = None if t_s is None else np.maximum.reduceat(t_s, start)
    ukey = key_s if start.size == n else key_s[start]
    rows = ukey // max(n_items, 1)
    cols = (ukey - rows * max(n_items, 1)).astype(np.int32)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    matrix = csr(stored_values(data, source), cols, indptr, shape)
    tmat = None if ts is None else csr(ts, cols, indptr, shape)
    return matrix, tmat
