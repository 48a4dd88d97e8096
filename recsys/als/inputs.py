"""What the model accepts as input: settings, interaction matrices, internal ids and external ids.

Checked once here so that a wrong input is one line naming it and the fix, never a silently
different answer (a truncated id, a dropped rating).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def check_settings(
    n_factors: Any,
    regularization: float,
    bias_regularization: float | None,
    use_bias: bool,
    iterations: int,
    memory_budget_mb: float,
) -> None:
    """Refuse `ALS` settings that cannot train (ValueError naming the argument)."""
    if isinstance(n_factors, bool) or not isinstance(n_factors, int | np.integer):
        raise ValueError(f"n_factors must be an integer >= 1, got {n_factors!r}")
    if n_factors < 1:
        raise ValueError(f"n_factors must be >= 1, got {n_factors}")
    if not regularization >= 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}")
    if bias_regularization is not None and not bias_regularization >= 0:
        raise ValueError(f"bias_regularization must be >= 0, got {bias_regularization}")
    if use_bias and not (
        regularization > 0 and (bias_regularization is None or bias_regularization > 0)
    ):
        raise ValueError(
            "use_bias=True needs regularization > 0 and bias_regularization > 0 so every "
            "solve is well posed; raise them or set use_bias=False"
        )
    if int(iterations) < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")


def as_csr(
    user_items: Any, name: str = "user_items", *, keep_zeros: bool = False
) -> tuple[sp.csr_matrix, Any]:
    """The CSR matrix of `user_items` (a scipy CSR or a recsys Interactions) and the source;
    stored zeros are dropped unless `keep_zeros` (ratings, where a 0 is a value)."""
    matrix = getattr(user_items, "matrix", user_items)
    if not sp.issparse(matrix) or matrix.format != "csr":
        kind = type(matrix).__name__ if not sp.issparse(matrix) else f"sparse {matrix.format}"
        raise ValueError(
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


def list_length(k: Any) -> int:
    """`k`, the length of a top-k list, as an int >= 1 (whole floats pass; booleans do not)."""
    number = isinstance(k, int | np.integer | float | np.floating) and not isinstance(k, bool)
    if not (number and np.isfinite(k) and k == int(k) and k >= 1):
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def checked_indices(ids: Any, n: int, what: str) -> np.ndarray:
    """`index_array` of ids that must also lie in [0, n): IndexError otherwise (as indexing a
    table of n rows would raise)."""
    idx = index_array(ids, what)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"{what} ids must be internal indices in [0, {n}); got out-of-range ids")
    return idx


def allowed_mask(include: Any, exclude: Any, n: int, what: str) -> np.ndarray | None:
    """Which of the n rows may be returned: only `include` (all when None) minus `exclude`;
    None when every row may. Both may be given (implicit refuses that; here the exclusions
    apply within the subset)."""
    if include is None and exclude is None:
        return None
    allowed = np.ones(n, dtype=bool)
    if include is not None:
        allowed[:] = False
        allowed[checked_indices(include, n, what)] = True
    if exclude is not None:
        allowed[checked_indices(exclude, n, what)] = False
    return allowed


def ids_to_array(ids: Any) -> np.ndarray | None:
    """External ids as a numpy array that `np.savez` can store without pickle."""
    if ids is None:
        return None
    arr = np.asarray(ids)
    return arr if arr.dtype.kind in "iuf" else arr.astype(str)
