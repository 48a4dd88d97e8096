"""Faiss search parameters per index type: nprobe (IVF), efSearch (HNSW), ID selectors, refine."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np


def base_search_params(base: Any, k: int, selector: Any, nprobe: int | None, ef: int | None) -> Any:
    """SearchParameters for a plain (unrefined) Faiss index, or None when nothing is needed."""
    if isinstance(base, faiss.IndexIVF):
        kwargs: dict[str, Any] = {}
        if nprobe is not None:
            kwargs["nprobe"] = int(min(max(1, nprobe), base.nlist))
        if selector is not None:
            kwargs["sel"] = selector
        return faiss.SearchParametersIVF(**kwargs) if kwargs else None
    if isinstance(base, faiss.IndexHNSW):
        kwargs = {}
        if ef is not None:
            kwargs["efSearch"] = int(max(ef, k))
        if selector is not None:
            kwargs["sel"] = selector
        return faiss.SearchParametersHNSW(**kwargs) if kwargs else None
    if selector is not None:
        return faiss.SearchParameters(sel=selector)
    return None


def search_params(
    base: Any,
    k: int,
    selector: Any,
    nprobe: int | None,
    ef: int | None,
    k_factor: float | None,
) -> Any:
    """SearchParameters for one CPU search of ``base``, or None when nothing needs passing.

    A refined factory index (``...,RFlat`` / ``...,Refine(...)``) gets
    IndexRefineSearchParameters whose ``base_index_params`` carry nprobe / efSearch and the
    selector to the IVF or HNSW inside it (Faiss ignores them otherwise), and whose
    ``k_factor`` (candidates re-scored = k_factor * k) is ``k_factor`` (default: the index's).
    """
    if not isinstance(base, faiss.IndexRefine):
        return base_search_params(base, k, selector, nprobe, ef)
    k_factor = float(base.k_factor if k_factor is None else k_factor)
    inner = base_search_params(
        faiss.downcast_index(base.base_index),
        int(np.ceil(k * k_factor)),
        selector,
        nprobe,
        ef,
    )
    params = faiss.IndexRefineSearchParameters(k_factor=k_factor)
    if inner is not None:
        params.base_index_params = inner
        params.keep_alive = inner  # Faiss holds a raw pointer to the inner parameters
    return params
