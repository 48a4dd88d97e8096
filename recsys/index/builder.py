"""Build a Faiss index from item vectors: exact (Flat), IVF, HNSW, or any factory string.

Scores in an ALS model are inner products, so the default metric is "ip" and an exact
("flat") IP index returns exactly the model's top-k. "cosine" normalizes items (and later
queries) and uses IP; "l2" is plain Euclidean distance. For "ip" the MIPS-to-L2 transform can
be switched on per build; its default per index type comes from a measurement on an ALS-like
synthetic catalog (see ``DEFAULT_MIPS_TO_L2`` and ``benchmarks/index.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from recsys.index.gpu import faiss_gpu_count
from recsys.index.item_index import KINDS, METRICS, ItemIndex
from recsys.index.shards import combine_shards, shard_bounds
from recsys.index.vectors import (
    as_float32_matrix,
    mips_augment_items,
    model_item_vectors,
    normalize_rows,
)

logger = logging.getLogger(__name__)

#: Whether metric "ip" uses the MIPS-to-L2 transform by default, per index type, measured with
#: ``scripts/benchmark_index.py`` (it runs both variants) on the ALS-like synthetic catalog
#: (log-normal item norms, shared popularity direction, low-rank topics) and on 64-factor ALS
#: factors of Gowalla (41k items), recall@20 against exact IP search:
#:
#: * IVF: the transform wins where item norms spread (it cuts the share of the catalog scanned
#:   for a recall target). Gowalla, default hkv model (64 factors, item log-norm std 0.46),
#:   nlist 810: recall@20 0.96 at nprobe 16 scanning 0.5% of the items vs native 0.98 at nprobe
#:   64 scanning 6.8%; synthetic stress catalog (log-norm std 0.9), 100k: nprobe 128 0.90 vs
#:   0.60. Counter-example: iALS with 128 factors on Gowalla (log-norm std 0.23, near-uniform
#:   norms): native 0.95 at nprobe 32 vs 0.67 transformed; set mips_to_l2=False for such models.
#: * HNSW: native IP wins on every catalog measured (Gowalla hkv: efSearch 64 gives 0.96 vs 0.62
#:   transformed; synthetic 100k: efSearch 1024 0.90 vs 0.42; Gowalla iALS 128: native 0.96 at
#:   efSearch 128). An earlier note of a degenerate IP graph plateauing at 0.73 on Gowalla
#:   factors was not reproduced on these models.
DEFAULT_MIPS_TO_L2: dict[str, bool] = {"flat": False, "ivf": True, "hnsw": False, "factory": False}

DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 128


def default_nlist(n_items: int) -> int:
    """IVF list count: about 4*sqrt(N), but with at least ~39 training points per list."""
    return int(max(1, min(round(4 * math.sqrt(n_items)), n_items // 39)))


def default_nprobe(nlist: int) -> int:
    """A starting nprobe: about nlist / 16 (at least 1); tune it with the benchmark.

    With the MIPS-to-L2 transform, probing about 1/16 of the lists gave recall@20 of 0.93-0.99 on
    Gowalla ALS factors (nprobe 32-64 of 810) and 0.83-0.90 (nprobe 64-128 of 1265) on the harder
    100k x 128 synthetic catalog.
    """
    return int(max(1, min(nlist, round(nlist / 16))))


def build_index(
    item_vectors: Any,
    kind: str = "flat",
    metric: str = "ip",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = DEFAULT_HNSW_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    factory: str | None = None,
    mips_to_l2: bool | None = None,
    device: str = "cpu",
    gpu_id: int = 0,
    item_ids: Any = None,
    vectors: str = "custom",
    seed: int = 0,
    shards: int = 1,
) -> ItemIndex:
    """Build an :class:`ItemIndex` over ``item_vectors`` (n_items, d).

    Args:
        item_vectors: float matrix (numpy or torch), one row per internal item index; for an
            ALS model use ``model.item_embeddings()`` (bias folded in) so that index scores are
            model scores (or :func:`build_index_from_model`).
        kind: "flat" (exact), "ivf" (IVF-Flat, trained on the vectors), "hnsw" (HNSW-Flat) or
            "factory" (any Faiss index_factory string given as ``factory``).
        metric: "ip" (default, ALS scores), "cosine" or "l2".
        nlist, nprobe: IVF list count (default :func:`default_nlist`) and lists probed per query
            (default :func:`default_nprobe`).
        hnsw_m, ef_construction, ef_search: HNSW graph degree and build / search beam widths.
        factory: Faiss factory string for kind="factory" (e.g. "IVF1024,SQ8", "HNSW32,Flat").
        mips_to_l2: for metric "ip", index the augmented vectors with L2 (None = the measured
            per-kind default in DEFAULT_MIPS_TO_L2).
        device: "cpu", "gpu" (move Flat / IVF to the GPU when Faiss has one; HNSW stays on the
            CPU, logged) or "auto" (GPU when available).
        item_ids: external item ids (ints or strings) for the rows; default 0..n-1.
        vectors: what was indexed, recorded for load-time checks: "embeddings" (model
            item_embeddings), "factors" (item factors) or "custom".
        seed: k-means seed for IVF training.
        shards: split the items over this many Faiss sub-indexes of the same kind (contiguous
            rows, sizes differing by at most one) combined with ``faiss.IndexShards`` and
            successive ids, so ids are still internal item indices. Each shard is trained on
            its own rows (IVF: ``nlist`` lists per shard, default from the smallest shard, and
            ``nprobe`` lists probed per shard). Exact (flat) search returns the same top-k as one
            index. With ``device="gpu"`` shard s goes to GPU ``(gpu_id + s) % n_gpus``.
    """
    _check_choices(kind, metric, device)
    x = as_float32_matrix(item_vectors, "item vectors")
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"cannot build an index over an empty matrix of shape {x.shape}")
    ids = _check_item_ids(item_ids, n)
    if mips_to_l2 is None:
        mips_to_l2 = metric == "ip" and DEFAULT_MIPS_TO_L2[kind]
    elif mips_to_l2 and metric != "ip":
        raise ValueError(f"mips_to_l2 applies to metric 'ip' only, not {metric!r}")
    xb, faiss_metric, max_norm = _indexed_vectors(x, metric, mips_to_l2)

    bounds, settings = _checked_settings(
        kind, n, shards, nlist, nprobe, hnsw_m, ef_construction, ef_search, factory, seed
    )
    item_index = ItemIndex(
        _build_parts(kind, xb, faiss_metric, bounds, settings),
        kind=kind,
        metric=metric,
        dim=d,
        params=settings.params,
        mips_to_l2=bool(mips_to_l2),
        max_norm=max_norm,
        item_ids=ids,
        vectors=vectors,
    )
    logger.info("built %r", item_index)
    if device == "gpu" or (device == "auto" and faiss_gpu_count() > 0):
        item_index.to_gpu(gpu_id)
    return item_index


def check_settings(
    kind: str,
    n_items: int,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = DEFAULT_HNSW_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    factory: str | None = None,
    shards: int = 1,
) -> dict[str, Any]:
    """The settings :func:`build_index` would use for `n_items` items (the IVF defaults filled
    in), checked without building anything: a pipeline calls it before training so a setting the
    data cannot take fails in seconds, not after the model is trained.

    Raises:
        ValueError: the same one-line message :func:`build_index` would raise.
    """
    _, settings = _checked_settings(
        kind, n_items, shards, nlist, nprobe, hnsw_m, ef_construction, ef_search, factory, 0
    )
    return settings.params


def _check_choices(kind: str, metric: str, device: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if device not in ("cpu", "gpu", "auto"):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")


def _indexed_vectors(
    x: np.ndarray, metric: str, mips_to_l2: bool
) -> tuple[np.ndarray, int, float | None]:
    """(vectors Faiss stores, Faiss metric, max norm of the MIPS-to-L2 transform or None)."""
    if metric == "cosine":
        return normalize_rows(x), faiss.METRIC_INNER_PRODUCT, None
    if metric == "ip" and mips_to_l2:
        xb, max_norm = mips_augment_items(x)
        return xb, faiss.METRIC_L2, max_norm
    if metric == "ip":
        return x, faiss.METRIC_INNER_PRODUCT, None
    return x, faiss.METRIC_L2, None


@dataclass
class _Settings:
    """The checked build settings of one index; ``params`` are the ones its sidecar records."""

    params: dict[str, Any]
    nlist: int | None
    nprobe: int | None
    hnsw_m: int
    ef_construction: int
    ef_search: int
    factory: str | None
    seed: int


def _checked_settings(
    kind: str,
    n: int,
    shards: int,
    *settings: Any,
) -> tuple[np.ndarray, _Settings]:
    """The shard bounds of `n` items and the checked settings (:func:`_settings`'s arguments
    after the bounds)."""
    if not 1 <= int(shards) <= n:
        raise ValueError(f"shards must be in [1, n_items={n}], got {shards}")
    bounds = shard_bounds(n, int(shards))
    return bounds, _settings(kind, bounds, *settings)


def _settings(
    kind: str,
    bounds: np.ndarray,
    nlist: int | None,
    nprobe: int | None,
    hnsw_m: int,
    ef_construction: int,
    ef_search: int,
    factory: str | None,
    seed: int,
) -> _Settings:
    """Check the settings of ``kind`` and fill in the IVF defaults (from the smallest shard)."""
    shards, n = bounds.size - 1, int(bounds[-1])
    smallest = int(np.diff(bounds).min())
    params: dict[str, Any] = {}
    if kind == "ivf":
        nlist = default_nlist(smallest) if nlist is None else int(nlist)
        if not 1 <= nlist <= smallest:
            where = f"the smallest shard ({smallest} items)" if shards > 1 else f"n_items={n}"
            raise ValueError(f"nlist must be in [1, {where}], got {nlist}")
        nprobe = default_nprobe(nlist) if nprobe is None else int(nprobe)
        if not 1 <= nprobe <= nlist:  # probing every list would be an exhaustive search
            raise ValueError(f"nprobe must be in [1, nlist={nlist}], got {nprobe}")
        params.update(nlist=nlist, nprobe=nprobe)
    elif kind == "hnsw":
        if hnsw_m < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError(
                f"need hnsw_m >= 2, ef_construction >= 1, ef_search >= 1; got {hnsw_m}, "
                f"{ef_construction}, {ef_search}"
            )
        params.update(M=int(hnsw_m), ef_construction=int(ef_construction), ef_search=int(ef_search))
    elif kind == "factory" and not factory:
        raise ValueError("kind='factory' needs a Faiss factory string, e.g. 'IVF1024,SQ8'")
    return _Settings(params, nlist, nprobe, hnsw_m, ef_construction, ef_search, factory, seed)


def _build_parts(
    kind: str, xb: np.ndarray, faiss_metric: int, bounds: np.ndarray, settings: _Settings
) -> faiss.Index:
    """The trained and filled Faiss index: one per shard, joined when there are several."""
    parts = []
    for s in range(bounds.size - 1):
        rows = xb[bounds[s] : bounds[s + 1]]
        part, extra = _new_faiss_index(kind, xb.shape[1], faiss_metric, settings)
        settings.params.update(extra)
        if not part.is_trained:
            logger.info("training %s index on %d vectors", kind, rows.shape[0])
            part.train(rows)
        part.add(rows)
        parts.append(part)
    return parts[0] if len(parts) == 1 else combine_shards(parts)


def _new_faiss_index(
    kind: str, dd: int, faiss_metric: int, settings: _Settings
) -> tuple[faiss.Index, dict[str, Any]]:
    """An empty (untrained) Faiss index of ``kind`` plus the factory-derived params."""
    extra: dict[str, Any] = {}
    nlist, nprobe, factory, seed = settings.nlist, settings.nprobe, settings.factory, settings.seed
    if kind == "flat":
        return faiss.IndexFlat(dd, faiss_metric), extra
    if kind == "ivf":
        # The factory gives an IndexIVFFlat that owns its quantizer (IndexFlatIP for IP).
        index = faiss.index_factory(dd, f"IVF{nlist},Flat", faiss_metric)
        faiss.extract_index_ivf(index).cp.seed = int(seed)
        return index, extra
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dd, int(settings.hnsw_m), faiss_metric)
        index.hnsw.efConstruction = int(settings.ef_construction)
        index.hnsw.efSearch = int(settings.ef_search)
        return index, extra
    try:
        index = faiss.index_factory(dd, factory, faiss_metric)
    except RuntimeError as err:
        raise ValueError(f"Faiss cannot build factory string {factory!r}: {err}") from err
    extra["factory"] = factory
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = int(seed)
        extra["nlist"] = int(ivf.nlist)
        if nprobe is not None:
            extra["nprobe"] = int(nprobe)
    elif isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        extra["ef_search"] = int(settings.ef_search)
    return index, extra


def build_index_from_model(
    model: Any,
    kind: str = "flat",
    metric: str = "ip",
    *,
    vectors: str | None = None,
    **kwargs: Any,
) -> ItemIndex:
    """Build an index from a fitted ALS model (thin adaptor over :func:`build_index`).

    ``vectors`` defaults to "embeddings" (``model.item_embeddings()``, whose IP with
    ``model.user_embeddings`` plus ``model.user_offsets`` is the model score) for metrics "ip"
    and "l2", and to "factors" (``model.item_factors``, no bias) for "cosine", which is what
    item-to-item similarity uses. ``item_ids`` defaults to ``model.item_ids`` (the external ids
    the model was trained with) when it has them. Other keyword arguments go to
    :func:`build_index`.
    """
    if vectors is None:
        vectors = "factors" if metric == "cosine" else "embeddings"
    if kwargs.get("item_ids") is None and getattr(model, "item_ids", None) is not None:
        kwargs["item_ids"] = model.item_ids
    return build_index(model_item_vectors(model, vectors), kind, metric, vectors=vectors, **kwargs)


def _check_item_ids(item_ids: Any, n: int) -> np.ndarray:
    if item_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(item_ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"item_ids must be a 1-D array of {n} ids, got shape {ids.shape}")
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    elif ids.dtype.kind in "UO":
        if not all(isinstance(v, str) for v in ids.tolist()):
            raise ValueError("item_ids must be all integers or all strings")
        ids = ids.astype(str)
    else:
        raise ValueError(f"item_ids must be integers or strings, got dtype {ids.dtype}")
    if len(np.unique(ids)) != n:
        raise ValueError("item_ids contain duplicates; each row needs its own external id")
    return ids
