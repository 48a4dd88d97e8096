"""What the model accepts as input: interaction matrices, internal ids and external ids.

Checked once here so that a wrong input is one line naming it and the fix, never a silently
different answer (a truncated id, a dropped rating).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def as_csr(
    user_items: Any, name: str = "user_items", *, keep_zeros: bool = False
) -> tuple[sp.csr_matrix, Any]:
    """The CSR matrix of `user_items` (a scipy CSR or a recsys Interactions) and the source;
    stored zeros are dropped unless `keep_zeros` (ratings, where a 0 is a value)."""
    matrix = getattr(user_items, "matrix", user_items)
    if not sp.issparse(matrix) or matrix.format != "csr":
        kind = type(matrix).__name__ if not sp.issparse(matrix) else f"sparse {matrix.format}"
        raise TypeError(
            f"{name} must be a scipy.sparse CSR matrix (users x items) or recsys Interactions, "
            f"got {kind}; convert with scipy.sparse.csr_matrix(...) or .tocsr()"
        )
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    if not keep_zeros:
        matrix.eliminate_zeros()
    return matrix, user_items


def index_array(ids: Any, what: str) -> np.ndarray:
    """`ids` as a flat int64 array of internal indices; whole floats (1.0) pass, anything else
    (1.7, NaN, booleans, strings) is refused instead of being truncated to a wrong row."""
    arr = np.asarray(ids).reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2.0**63)
        if whole.all():
            return arr.astype(np.int64)
        shown = arr[~whole]
    else:
        shown = arr
    more = f" (and {shown.size - 5} more)" if shown.size > 5 else ""
    raise ValueError(
        f"{what} ids must be integer internal indices, got {arr.dtype} values "
        f"{shown[:5].tolist()}{more}; map external ids to indices (user_ids / item_ids) first"
    )


def ids_to_array(ids: Any) -> np.ndarray | None:
    """External ids as a numpy array that `np.savez` can store without pickle."""
    if ids is None:
        return None
    arr = np.asarray(ids)
    return arr if arr.dtype.kind in "iuf" else arr.astype(str)
