"""Faiss search parameters per index type: nprobe (IVF), efSearch (HNSW), ID selectors, refine."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from recsys.index.gpu import GPU_MAX_K


def ivf_inside(base: Any) -> Any:
    """The IndexIVF whose ``nprobe`` a search sets: ``base`` itself, or the index a refine
    step wraps; None for other indexes."""
    if isinstance(base, faiss.IndexRefine):
        base = faiss.downcast_index(base.base_index)
    return base if isinstance(base, faiss.IndexIVF) else None


def check_nprobe(nprobe: int | None, nlist: int | None, *, gpu: bool = False) -> None:
    """Raise ValueError unless ``nprobe`` is None or in [1, nlist] (any value >= 1 without IVF),
    and at most ``GPU_MAX_K`` on the GPU.

    Faiss would probe at most ``nlist`` lists anyway; refusing (as ``build_index`` does) instead
    of clamping keeps a mistyped setting from passing for a tuned one.
    """
    if nprobe is None:
        return
    if nprobe < 1:
        raise ValueError(f"nprobe must be >= 1, got {nprobe}")
    if nlist is not None and nprobe > nlist:
        raise ValueError(
            f"nprobe={nprobe} is larger than nlist={nlist}: an IVF index cannot probe more lists "
            f"than it has; pass nprobe <= {nlist}"
        )
    if gpu and nlist is not None and nprobe > GPU_MAX_K:
        raise ValueError(
            f"nprobe={nprobe} is above {GPU_MAX_K}, the most a Faiss GPU index probes; pass "
            f"nprobe <= {GPU_MAX_K} or search on the CPU"
        )


def base_search_params(base: Any, k: int, selector: Any, nprobe: int | None, ef: int | None) -> Any:
    """SearchParameters for a plain (unrefined) Faiss index, or None when nothing is needed."""
    if isinstance(base, faiss.IndexIVF):
        kwargs: dict[str, Any] = {}
        if nprobe is not None:
            kwargs["nprobe"] = int(nprobe)  # in [1, nlist]: see check_nprobe
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
