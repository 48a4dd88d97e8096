"""Array helpers shared by the index builder, the search wrapper and candidate generation.

Faiss wants C-contiguous float32 matrices; models hand out numpy arrays or torch tensors. The
MIPS-to-L2 transform lives here too, because building (items) and searching (queries) must
apply the two halves of it consistently.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_float32_matrix(x: Any, name: str = "vectors") -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor) as a C-contiguous float32 matrix.

    Raises ValueError when ``x`` is not 2-D or holds NaN/inf (Faiss would silently return
    garbage for those rows).
    """
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows x dimensions) array, got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(
            f"{name} contain NaN or inf in {bad.size} rows (first: {bad[:5].tolist()}); "
            "fix the model (e.g. a diverged fit) before building or searching an index"
        )
    return arr


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-normalize rows (float32) for cosine similarity; all-zero rows stay zero."""
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    out = np.divide(x, norms, out=np.zeros_like(x, dtype=np.float64), where=norms > 0)
    return np.ascontiguousarray(out, dtype=np.float32)


def mips_augment_items(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Append sqrt(M^2 - ||y||^2) to every item row, with M the largest item norm.

    All augmented items then have norm M, so for a query q augmented with a 0,
    ||q' - y'||^2 = ||q||^2 + M^2 - 2 q.y: the L2 nearest neighbours are exactly the
    maximum-inner-product items. Returns the augmented matrix and M.
    """
    norms2 = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64))
    max_norm2 = float(norms2.max()) if norms2.size else 0.0
    extra = np.sqrt(np.maximum(max_norm2 - norms2, 0.0))
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = x
    out[:, -1] = extra
    return out, float(np.sqrt(max_norm2))


def mips_augment_queries(q: np.ndarray) -> np.ndarray:
    """Append a zero column to queries (the query half of the MIPS-to-L2 transform)."""
    out = np.zeros((q.shape[0], q.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = q
    return out


def mips_l2_to_ip(distances: np.ndarray, queries: np.ndarray, max_norm: float) -> np.ndarray:
    """Turn squared L2 distances of the augmented space back into inner products.

    q.y = (||q||^2 + M^2 - D) / 2. Computed in float64; accurate to roughly float32 precision
    times M^2, which is why candidate generation rescored results exactly.
    """
    qn2 = np.einsum("ij,ij->i", queries.astype(np.float64), queries.astype(np.float64))
    ip = (qn2[:, None] + max_norm**2 - distances.astype(np.float64)) / 2.0
    return ip.astype(np.float32)


def allowed_mask(
    n_items: int,
    allowed_items: Any = None,
    excluded_items: Any = None,
) -> np.ndarray | None:
    """Boolean mask of items that may be returned, or None when every item may.

    ``allowed_items`` (ids to keep) and ``excluded_items`` (ids to drop) are internal item
    indices; ids outside [0, n_items) raise ValueError naming them.
    """
    if allowed_items is None and excluded_items is None:
        return None
    if allowed_items is None:
        mask = np.ones(n_items, dtype=bool)
    else:
        allowed = check_item_ids(allowed_items, n_items, "allowed_items")
        mask = np.zeros(n_items, dtype=bool)
        mask[allowed] = True
    if excluded_items is not None:
        mask[check_item_ids(excluded_items, n_items, "excluded_items")] = False
    return mask


def check_item_ids(ids: Any, n_items: int, name: str = "item ids") -> np.ndarray:
    """Validate internal item indices (ints in [0, n_items)) and return them as int64."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"{name} must be internal integer item indices, got dtype {arr.dtype}; map "
                "external ids with Interactions.item_index(...) first"
            )
    arr = arr.astype(np.int64).ravel()
    bad = arr[(arr < 0) | (arr >= n_items)]
    if bad.size:
        raise ValueError(
            f"{name} contain {bad.size} ids outside [0, {n_items}) (first: "
            f"{np.unique(bad)[:10].tolist()}); use internal item indices of this catalog"
        )
    return arr


def model_item_vectors(model: Any, vectors: str = "embeddings") -> np.ndarray:
    """The item vectors of a model: "embeddings" (scores, bias folded in) or "factors"."""
    if vectors == "embeddings":
        return as_float32_matrix(model.item_embeddings(), "model.item_embeddings()")
    if vectors == "factors":
        return as_float32_matrix(model.item_factors, "model.item_factors")
    raise ValueError(f"vectors must be 'embeddings' or 'factors', got {vectors!r}")
