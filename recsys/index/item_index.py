"""ItemIndex: a Faiss index over item vectors plus what is needed to query it correctly.

A raw Faiss index does not remember whether its items were normalized (cosine), augmented with
an extra dimension (MIPS-to-L2), which external item ids its rows stand for, or how to pass
search-time parameters and ID selectors to it. ItemIndex keeps all of that together so that
queries are always transformed the same way the items were, and every search returns scores
on one convention: higher is better (inner product, cosine similarity, or minus the squared L2
distance).

A sharded index (``build_index(..., shards=S)``) is a Faiss ``IndexShards`` with
``successive_ids`` (see :mod:`recsys.index.shards`). Unfiltered searches go through
``IndexShards`` (which passes the search parameters, nprobe / efSearch, to every shard and merges
the per-shard top-k); a filtered search gives each shard its own slice of the allow mask as an ID
selector and merges the results.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.index.errors import IndexMismatchError
from recsys.index.gpu import GPU_MAX_K, faiss_gpu_count, is_hnsw
from recsys.index.params import check_nprobe, ivf_inside, search_params
from recsys.index.shards import combine_shards, merge_shard_results, shard_list
from recsys.index.sidecar import (
    SIDECAR_FORMAT,
    file_sha256,
    ids_to_json,
    write_faiss,
    write_sidecar,
)
from recsys.index.vectors import (
    as_float32_matrix,
    mips_augment_queries,
    mips_l2_to_ip,
    normalize_rows,
)

logger = logging.getLogger(__name__)

METRICS = ("ip", "cosine", "l2")
KINDS = ("flat", "ivf", "hnsw", "factory")


class ItemIndex:
    """A built (or loaded) Faiss index over one catalog's item vectors.

    Rows of the Faiss index are internal item indices 0..n_items-1; ``item_ids[i]`` is the
    external id of row i. Build one with :func:`recsys.index.build_index`, or load one with
    :func:`recsys.index.load_index`. ``index`` may be a Faiss ``IndexShards`` with successive
    ids (see the module docstring); ``shards`` / ``shard_sizes`` describe it.

    Attributes:
        kind: "flat", "ivf", "hnsw" or "factory".
        metric: "ip", "cosine" or "l2" (what the caller asked for, before any transform).
        dim: dimension of the item vectors and of the queries given to :meth:`search`.
        params: build and search parameters (nlist, nprobe, M, ef_construction, ef_search,
            factory), recorded in the saved sidecar.
        mips_to_l2: whether items carry the extra MIPS-to-L2 dimension (metric "ip" only).
        max_norm: the largest item norm M used by that transform.
        item_ids: external item ids, one per row.
        vectors: which vectors were indexed ("embeddings", "factors" or "custom"); used to
            check a loaded index against a model.
        device: "cpu" or "gpu".
    """

    def __init__(
        self,
        index: faiss.Index,
        *,
        kind: str,
        metric: str,
        dim: int,
        params: dict[str, Any] | None = None,
        mips_to_l2: bool = False,
        max_norm: float | None = None,
        item_ids: np.ndarray | None = None,
        vectors: str = "custom",
        model_sha256: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if mips_to_l2 and metric != "ip":
            raise ValueError("the MIPS-to-L2 transform only applies to metric 'ip'")
        if mips_to_l2 and max_norm is None:
            raise ValueError("mips_to_l2=True needs the max_norm the items were augmented with")
        expected_d = dim + 1 if mips_to_l2 else dim
        if index.d != expected_d:
            raise IndexMismatchError(
                f"Faiss index has dimension {index.d} but {expected_d} was expected "
                f"(dim={dim}, mips_to_l2={mips_to_l2})"
            )
        self.index = index
        self.kind = kind
        self.metric = metric
        self.dim = int(dim)
        self.params: dict[str, Any] = dict(params or {})
        self.mips_to_l2 = bool(mips_to_l2)
        self.max_norm = None if max_norm is None else float(max_norm)
        n = int(index.ntotal)
        self.item_ids = np.arange(n, dtype=np.int64) if item_ids is None else np.asarray(item_ids)
        if len(self.item_ids) != n:
            raise IndexMismatchError(
                f"item_ids has {len(self.item_ids)} entries but the index holds {n} items"
            )
        self.vectors = vectors
        self.model_sha256 = model_sha256
        self.device = "cpu"
        self._gpu_resources: Any = None
        self._selector_support: bool | None = None
        subs = shard_list(index)
        self._shards: list[faiss.Index] | None = subs
        ivf = ivf_inside(self._base())
        self._nlist: int | None = None if ivf is None else int(ivf.nlist)
        if subs is not None:
            if not faiss.downcast_index(index).successive_ids:
                raise IndexMismatchError(
                    "a sharded index must use successive ids (faiss.IndexShards(d, threaded, "
                    "True)), so that shard results map back to item rows"
                )
            if any(sub.ntotal == 0 for sub in subs):
                raise IndexMismatchError("every shard of a sharded index must hold items")

    # ------------------------------------------------------------------ properties
    @property
    def n_items(self) -> int:
        """Number of items (rows) in the index."""
        return int(self.index.ntotal)

    @property
    def shards(self) -> int:
        """Number of Faiss sub-indexes the items are split over (1: a plain index)."""
        return 1 if self._shards is None else len(self._shards)

    @property
    def shard_sizes(self) -> list[int]:
        """Items per shard, in row order (``[n_items]`` for a plain index)."""
        if self._shards is None:
            return [self.n_items]
        return [int(sub.ntotal) for sub in self._shards]

    def _base(self) -> Any:
        """The index whose type decides search parameters (the first shard when sharded)."""
        return faiss.downcast_index(self.index if self._shards is None else self._shards[0])

    @property
    def nlist(self) -> int | None:
        """The IVF list count (per shard) that ``nprobe`` may not exceed; None without IVF."""
        return self._nlist

    @property
    def max_nprobe(self) -> int | None:
        """Largest nprobe a search may use: :attr:`nlist`, at most 2048 on the GPU."""
        if self._nlist is None:
            return None
        return min(self._nlist, GPU_MAX_K) if self.device == "gpu" else self._nlist

    @property
    def exact(self) -> bool:
        """True when search is exhaustive (a Flat index): results are the exact top-k."""
        return self.kind == "flat"

    @property
    def max_k(self) -> int:
        """Largest k one search may ask for (GPU indexes cap it at 2048)."""
        return min(self.n_items, GPU_MAX_K) if self.device == "gpu" else self.n_items

    @property
    def supports_selectors(self) -> bool:
        """Whether searches honour Faiss ID selectors (pre-filtering inside the index).

        GPU indexes silently ignore selectors, so they report False; Flat, IVF and HNSW on the
        CPU support them. Factory indexes are probed once with a real filtered search.
        """
        if self.device == "gpu":
            return False
        if self._selector_support is None:
            if self.kind in ("flat", "ivf", "hnsw"):
                self._selector_support = True
            else:
                self._selector_support = self._probe_selector_support()
        return self._selector_support

    def __repr__(self) -> str:
        extra = ", mips_to_l2" if self.mips_to_l2 else ""
        if self.shards > 1:
            extra += f", shards={self.shard_sizes}"
        return (
            f"ItemIndex(kind={self.kind!r}, metric={self.metric!r}, dim={self.dim}, "
            f"n_items={self.n_items}, params={self.params}, device={self.device!r}{extra})"
        )

    # ------------------------------------------------------------------ search
    def prepare_queries(self, queries: Any) -> np.ndarray:
        """Apply the query side of the metric transform (normalize / zero-augment)."""
        q = as_float32_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise IndexMismatchError(
                f"queries have dimension {q.shape[1]} but the index was built for {self.dim}; "
                "use the same model for queries and for building the index"
            )
        if self.metric == "cosine":
            q = normalize_rows(q)
        elif self.mips_to_l2:
            q = mips_augment_queries(q)
        return q

    def search(
        self,
        queries: Any,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query: (ids int64 (n, k), scores float32 (n, k)), best first.

        Args:
            queries: (n, dim) query vectors (user embeddings, or item vectors for similar
                items); transformed like the items were.
            k: results per query, 1 <= k <= max_k.
            allowed: optional boolean mask over items; only items with True are returned.
                Applied inside Faiss with an IDSelectorBitmap where the index supports
                selectors, and always re-checked afterwards (GPU indexes ignore selectors).
            nprobe / ef_search: per-call overrides of the IVF / HNSW search parameters;
                ``nprobe`` above :attr:`nlist` raises ValueError.

        Returns ids (internal item indices) and scores where higher is better: the inner
        product (metric "ip", also through the MIPS-to-L2 transform), the cosine similarity
        ("cosine") or minus the squared L2 distance ("l2"). Where fewer than k allowed items
        were found (an approximate index with a restrictive filter, or a GPU index whose
        unfiltered top-k held disallowed items) rows are padded at the end with id -1 and score
        -inf; callers that need exactly k fetch more (see CandidateGenerator).
        """
        k = int(k)
        if k < 1 or k > self.max_k:
            raise ValueError(f"k must be in [1, {self.max_k}] for this index, got {k}")
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (self.n_items,):
                raise ValueError(
                    f"allowed must be a boolean mask of shape ({self.n_items},), "
                    f"got {allowed.shape}"
                )
            if allowed.all():
                allowed = None
        self._check_nprobe(self.params.get("nprobe") if nprobe is None else nprobe)
        q = self.prepare_queries(queries)
        if q.shape[0] == 0:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        use_selector = allowed is not None and self.supports_selectors
        distances, ids = self._faiss_search(
            q, k, allowed if use_selector else None, nprobe=nprobe, ef_search=ef_search
        )
        scores = self._to_scores(distances, q)
        invalid = ids < 0
        if allowed is not None:
            invalid |= ~allowed[np.where(invalid, 0, ids)]
        if invalid.any():
            ids, scores = _compact(ids, scores, invalid)
        return ids, scores

    def _check_nprobe(self, nprobe: int | None) -> None:
        """Refuse an nprobe above the list count (per shard) or the GPU limit; see check_nprobe."""
        check_nprobe(nprobe, self.nlist, gpu=self.device == "gpu")

    def _to_scores(self, distances: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.mips_to_l2:
            assert self.max_norm is not None
            scores = mips_l2_to_ip(distances, q[:, :-1], self.max_norm)
        elif self.metric == "l2":
            scores = -distances
        else:
            scores = distances
        return np.ascontiguousarray(scores, dtype=np.float32)

    def _search_params(
        self, k: int, selector: Any, nprobe: int | None, ef_search: int | None
    ) -> Any:
        """SearchParameters for one CPU search (see :func:`recsys.index.params.search_params`)."""
        nprobe = nprobe if nprobe is not None else self.params.get("nprobe")
        ef = ef_search if ef_search is not None else self.params.get("ef_search")
        return search_params(self._base(), k, selector, nprobe, ef, self.params.get("k_factor"))

    def _faiss_search(
        self,
        q: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        *,
        nprobe: int | None,
        ef_search: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.device == "gpu":
            # GPU indexes take no SearchParameters (and ignore selectors): set nprobe directly.
            probe = nprobe if nprobe is not None else self.params.get("nprobe")
            for sub in [self.index] if self._shards is None else self._shards:
                if probe is not None and hasattr(sub, "nprobe"):
                    sub.nprobe = int(probe)  # in [1, min(nlist, GPU_MAX_K)]: checked by search()
            return self.index.search(q, k)
        if self._shards is not None and allowed is not None:
            return self._sharded_filtered_search(q, k, allowed, nprobe, ef_search)
        bitmap = None
        selector = None
        if allowed is not None:
            # The selector reads this buffer during search: keep it alive until search returns.
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(self.n_items, faiss.swig_ptr(bitmap))
        params = self._search_params(k, selector, nprobe, ef_search)
        if params is None:
            distances, ids = self.index.search(q, k)
        else:
            distances, ids = self.index.search(q, k, params=params)
        del bitmap, selector, params
        return distances, ids

    def _sharded_filtered_search(
        self,
        q: np.ndarray,
        k: int,
        allowed: np.ndarray,
        nprobe: int | None,
        ef_search: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search every shard with its own slice of ``allowed`` as a selector, then merge.

        Returns Faiss distances and global ids like ``IndexShards.search`` would: (n, k), best
        first, -1 where fewer than k allowed items were found.
        """
        assert self._shards is not None
        dists, ids = [], []
        offset = 0
        for sub in self._shards:
            size = int(sub.ntotal)
            local = allowed[offset : offset + size]
            if local.any():
                kk = min(k, size)
                bitmap = np.packbits(local, bitorder="little")
                selector = faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap))
                params = self._search_params(kk, selector, nprobe, ef_search)
                d, i = sub.search(q, kk, params=params)
                del bitmap, selector, params
                ids.append(np.where(i >= 0, i + offset, -1))
                dists.append(d)
            offset += size
        larger_is_better = self._base().metric_type == faiss.METRIC_INNER_PRODUCT
        return merge_shard_results(dists, ids, q.shape[0], k, larger_is_better)

    def _probe_selector_support(self) -> bool:
        """Check with a real search that this (factory) index honours an ID selector."""
        n = self.n_items
        if n < 2:
            return False
        rng = np.random.default_rng(0)
        q = rng.standard_normal((1, self.index.d)).astype(np.float32)
        try:
            _, ids = self._faiss_search(q, 1, None, nprobe=None, ef_search=None)
            top = int(ids[0, 0])
            if top < 0:
                return False
            mask = np.ones(n, dtype=bool)
            mask[top] = False
            _, ids2 = self._faiss_search(q, min(n, 4), mask, nprobe=None, ef_search=None)
        except RuntimeError as err:
            logger.info("index %s does not support ID selectors (%s); post-filtering", self, err)
            return False
        ok = top not in ids2[0].tolist()
        if not ok:
            logger.info("index %s ignores ID selectors; filtering after the search", self)
        return ok

    # ------------------------------------------------------------------ parameters / devices
    def set_search_params(
        self,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: float | None = None,
    ) -> None:
        """Change the default nprobe (IVF) / efSearch (HNSW) used by later searches.

        ``nprobe`` must be in [1, :attr:`nlist`]: a value above the list count raises
        ValueError naming both, like ``build_index`` does.

        ``k_factor`` applies to refined factory indexes (e.g. "IVF4096,SQ8,RFlat"): the inner
        index returns k_factor * k candidates, which are re-scored exactly.
        """
        if k_factor is not None:
            if k_factor < 1:
                raise ValueError(f"k_factor must be >= 1, got {k_factor}")
            self.params["k_factor"] = float(k_factor)
        if nprobe is not None:
            self._check_nprobe(nprobe)
            self.params["nprobe"] = int(nprobe)
        if ef_search is not None:
            if ef_search < 1:
                raise ValueError(f"ef_search must be >= 1, got {ef_search}")
            self.params["ef_search"] = int(ef_search)

    def to_gpu(self, gpu_id: int = 0) -> ItemIndex:
        """Move a Flat or IVF index to the GPU when Faiss has one (in place; returns self).

        HNSW has no GPU implementation in Faiss and stays on the CPU (logged); without a GPU
        build or device the index stays on the CPU with a warning. GPU indexes ignore ID
        selectors, so filtered searches there over-fetch and post-filter. A sharded index puts
        shard s on GPU ``(gpu_id + s) % n_gpus`` (one shard per device when ``shards`` equals
        the GPU count) and searches the shards in parallel threads.
        """
        if self.device == "gpu":
            return self
        if self.kind == "hnsw" or is_hnsw(self._base()):
            logger.info(
                "HNSW indexes have no GPU implementation in Faiss: keeping the %s index on CPU",
                self.kind,
            )
            return self
        n_gpus = faiss_gpu_count()
        if n_gpus == 0:
            logger.warning(
                "GPU index requested but Faiss sees no GPU (faiss-cpu build or no device): "
                "keeping the %s index on CPU",
                self.kind,
            )
            return self
        cpu_parts = [self.index] if self._shards is None else self._shards
        devices = [(int(gpu_id) + s) % n_gpus for s in range(len(cpu_parts))]
        resources = {dev: faiss.StandardGpuResources() for dev in sorted(set(devices))}
        try:
            gpu_parts = [
                faiss.index_cpu_to_gpu(resources[dev], dev, part)
                for dev, part in zip(devices, cpu_parts, strict=True)
            ]
        except RuntimeError as err:
            logger.warning(
                "could not move the %s index to GPU %s (%s): staying on CPU",
                self.kind,
                sorted(set(devices)),
                err,
            )
            return self
        if self._shards is None:
            self.index = gpu_parts[0]
        else:
            self._shards = gpu_parts
            self.index = combine_shards(gpu_parts, threaded=True)
        self._gpu_resources = resources
        self.device = "gpu"
        logger.info(
            "moved the %s index (%d items, %d shard(s)) to GPU(s) %s",
            self.kind,
            self.n_items,
            self.shards,
            sorted(set(devices)),
        )
        return self

    def to_cpu(self) -> ItemIndex:
        """Bring a GPU index back to the CPU (in place; returns self)."""
        if self.device == "gpu":
            parts = self.cpu_shards()
            if self._shards is None:
                self.index = parts[0]
            else:
                self._shards = parts
                self.index = combine_shards(parts)
            self._gpu_resources = None
            self.device = "cpu"
        return self

    def cpu_shards(self) -> list[faiss.Index]:
        """The CPU Faiss index of every shard in row order (``[cpu_index()]`` when unsharded);
        copies when the index is on the GPU."""
        parts = [self.index] if self._shards is None else self._shards
        if self.device == "gpu":
            return [faiss.index_gpu_to_cpu(part) for part in parts]
        return list(parts)

    def cpu_index(self) -> faiss.Index:
        """A CPU Faiss index with the same content (the index itself when already on CPU)."""
        if self.device != "gpu":
            return self.index
        parts = self.cpu_shards()
        return parts[0] if self._shards is None else combine_shards(parts)

    # ------------------------------------------------------------------ compatibility
    def check_compatible(
        self,
        *,
        dim: int | None = None,
        n_items: int | None = None,
        metric: str | None = None,
        item_ids: Any = None,
        what: str = "the model",
    ) -> None:
        """Raise IndexMismatchError when this index does not fit the given model facts."""
        problems = []
        if dim is not None and int(dim) != self.dim:
            problems.append(f"dimension: index {self.dim}, {what} {int(dim)}")
        if metric is not None and metric != self.metric:
            problems.append(f"metric: index {self.metric!r}, requested {metric!r}")
        if n_items is not None and int(n_items) != self.n_items:
            problems.append(f"number of items: index {self.n_items}, {what} {int(n_items)}")
        if item_ids is not None:
            msg = describe_id_mismatch(self.item_ids, np.asarray(item_ids))
            if msg:
                problems.append(f"item ids: {msg}")
        if problems:
            raise IndexMismatchError(
                f"the index does not match {what}: "
                + "; ".join(problems)
                + ". Rebuild the index from this model (recsys.index.build_index or "
                "scripts/export_index.py)"
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any, *, model_path: Any = None) -> Path:
        """Write ``path`` (Faiss index) and its ``.json`` sidecar atomically; return the sidecar.

        ``model_path``: the saved model file the index was built from; its SHA-256 goes into the
        sidecar so loading can tell when the model has changed since. GPU indexes are copied to
        the CPU for writing (Faiss writes CPU indexes only).
        """
        path = Path(path)
        model_sha = file_sha256(model_path) if model_path is not None else self.model_sha256
        parts = self.cpu_shards()
        shard_bytes = write_faiss(path, parts)
        id_kind, id_values = ids_to_json(self.item_ids)
        meta = {
            "format": SIDECAR_FORMAT,
            "faiss_version": faiss.__version__,
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "index_dim": int(parts[0].d),
            "n_items": self.n_items,
            "shards": self.shards,
            "shard_sizes": self.shard_sizes,
            "shard_bytes": shard_bytes or None,
            "params": self.params,
            "mips_to_l2": self.mips_to_l2,
            "max_norm": self.max_norm,
            "vectors": self.vectors,
            "model_sha256": model_sha,
            "model_file": None if model_path is None else Path(model_path).name,
            "index_file": path.name,
            "index_sha256": file_sha256(path),
            "item_id_type": id_kind,
            "item_ids": id_values,
        }
        side = write_sidecar(path, meta)
        self.model_sha256 = model_sha
        logger.info("saved %r to %s (+ %s)", self, path, side.name)
        return side


def describe_id_mismatch(ours: np.ndarray, theirs: np.ndarray) -> str | None:
    """A human-readable description of how two item id maps differ, or None if equal."""
    if len(ours) != len(theirs):
        return f"index has {len(ours)} ids, given map has {len(theirs)}"
    if len(ours) == 0:
        return None
    kinds = {ours.dtype.kind in "iu", theirs.dtype.kind in "iu"}
    if len(kinds) == 2:
        return (
            f"index ids are {'integers' if ours.dtype.kind in 'iu' else 'strings'} but the "
            f"given ids are {'integers' if theirs.dtype.kind in 'iu' else 'strings'}"
        )
    diff = np.flatnonzero(ours != theirs)
    if diff.size == 0:
        return None
    i = int(diff[0])
    return (
        f"{diff.size} positions differ (first at row {i}: index {ours[i]!r}, given "
        f"{theirs[i]!r}); the catalog changed or is ordered differently"
    )


def _compact(
    ids: np.ndarray, scores: np.ndarray, invalid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move the valid entries of each row to the front (keeping order); pad with -1 / -inf."""
    order = np.argsort(invalid, axis=1, kind="stable")
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    inv = np.take_along_axis(invalid, order, axis=1)
    ids[inv] = -1
    scores[inv] = -np.inf
    return ids, scores
