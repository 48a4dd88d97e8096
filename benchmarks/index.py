"""Recall / throughput benchmark of approximate item indexes against exact search.

Used by ``scripts/benchmark_index.py``. The synthetic catalog imitates ALS item factors (see
:func:`synthetic_catalog` and :data:`CATALOG_PRESETS`). Ground truth is exact inner-product
search (a Flat IP index, one batched call with the same thread count); recall@k = |approximate
top-k & exact top-k| / k, averaged over queries. Throughput is measured on one batched search
call of all queries (median of ``repeats`` runs and of at least ``min_seconds``) on two
clocks: wall time and the process's CPU time.
On a machine shared with other jobs the CPU clock is the fairer one (time the process was not
scheduled does not count); with one Faiss thread it is plain single-core throughput. Speed-ups
are over the batched exact search of the same queries (all of them, one call), the baseline a
user compares against: exact search of a batch runs as a matrix product and gets many times
the per-query throughput of a small batch (at 1M items x 128 dims, pairing with an exact search
of 100 queries printed 257x for HNSW efSearch 64, whose 13,743 QPS against the batched search
of all 1,000 queries, 705 QPS, is 19.5x). The exact search is timed at
the start and again at the end; with ``paired`` it also runs before every timed run of a
setting, and the setting's speed-up is over that interleaved run (both see the same load);
without pairing it is over the faster of the start and end timings. The share
of the catalog each query computes distances for is recorded too: unlike the clocks it does not
depend on the load.

IVF variants of one (nlist, MIPS) setting share one trained coarse quantizer (and, except PQ
fast-scan, one list assignment): IVF-Flat, and compressed codes (SQ8, 4-bit PQ fast-scan)
whose candidates are re-scored exactly (``RFlat``, ``k_factor * k`` candidates). Each is the
Faiss structure ``build_index(kind="factory", factory="IVF{nlist},{code},RFlat")`` builds;
only the k-means sample (``train_per_list`` points per list instead of Faiss's 256) is
smaller, to keep 1M-item runs affordable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from recsys.index import ItemIndex, build_index, default_nlist, default_nprobe
from recsys.index.vectors import as_float32_matrix, mips_augment_items

logger = logging.getLogger(__name__)

#: Synthetic catalog presets (keyword arguments of :func:`synthetic_catalog`). "stress": the
#: generator's defaults, heavier-tailed than the models this library trains (the exact top-20
#: of 1M items come from its 0.5% largest-norm items). "hkv64": matched to the item embeddings
#: of the default hkv model (conf/als/hkv.yaml: 64 factors, alpha 10, lambda 0.01, 15 epochs)
#: fitted on Gowalla: item log-norm std 0.46, median cosine to the mean direction 0.18 (users
#: 0.11), cosine of a user to its top-1 item about 0.6.
CATALOG_PRESETS: dict[str, dict[str, float]] = {
    "stress": {},
    "hkv64": {"item_norm_sigma": 0.46, "item_mean_cos": 0.18, "query_mean_cos": 0.11, "noise": 0.3},
}

#: IVF codes the benchmark knows: "Flat" (IVF-Flat), "SQ8" (8-bit scalar quantizer) and "PQfs"
#: (4-bit PQ fast-scan with about 3-4 dimensions per sub-quantizer); all but Flat are refined.
IVF_CODES = ("Flat", "SQ8", "PQfs")
CLOCKS = ("wall", "cpu")


def synthetic_catalog(
    n_items: int,
    dim: int = 128,
    *,
    n_queries: int = 1000,
    rank: int | None = None,
    n_topics: int = 256,
    item_norm_sigma: float = 0.9,
    query_norm_sigma: float = 1.0,
    item_mean_cos: float = 0.45,
    query_mean_cos: float = 0.1,
    noise: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """ALS-like item vectors (n_items, dim) and queries (n_queries, dim), float32.

    A direction is ``mean_cos`` parts a shared unit vector (the "popularity" direction ALS
    factors have) plus a topic component (one of ``n_topics`` centres in a ``rank``-dim
    subspace, default 3/4 of ``dim``, with a decaying spectrum, plus within-topic spread) plus
    isotropic ``noise``; norms are log-normal with log-std ``item_norm_sigma`` (items) and
    ``query_norm_sigma`` (queries).

    The defaults (item log-norm std 0.9, median item cosine to the mean direction 0.45, users
    0.1) were meant to match 64-factor ALS factors of Gowalla. Measured on the models this
    library trains on Gowalla they are heavier-tailed: the default hkv model (64 factors) has
    log-norm std 0.46 and cosine 0.18, iALS with 128 factors 0.23 and 0.03. With the defaults
    the exact top-20 concentrate on the few largest-norm items (at 1M items, half the top-20
    entries are among the 70 largest norms), which makes them a stress case for partitioning
    indexes; ``CATALOG_PRESETS["hkv64"]`` gives a catalog matched to the hkv model.
    """
    rng = np.random.default_rng(seed)
    rank = max(1, min(dim, 3 * dim // 4 if rank is None else rank))
    basis, _ = np.linalg.qr(rng.standard_normal((dim, rank + 1)))  # orthonormal columns
    shared = basis[:, 0]
    basis = basis[:, 1:]
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(rank))
    centres = rng.standard_normal((n_topics, rank)) * spectrum

    def draw(n: int, sigma: float, mean_cos: float) -> np.ndarray:
        out = np.empty((n, dim), dtype=np.float32)
        step = 1 << 16
        for s in range(0, n, step):
            m = min(step, n - s)
            topic = rng.integers(0, n_topics, m)
            latent = centres[topic] + 0.7 * rng.standard_normal((m, rank)) * spectrum
            x = latent @ basis.T
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x += noise * rng.standard_normal((m, dim)) / np.sqrt(dim)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            # mix in the shared direction so that cos(x, shared) is about mean_cos
            x = mean_cos * shared + np.sqrt(max(0.0, 1.0 - mean_cos**2)) * x
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            norms = np.exp(sigma * rng.standard_normal(m))
            out[s : s + m] = x * norms[:, None]
        return out

    items = draw(n_items, item_norm_sigma, item_mean_cos)
    queries = draw(n_queries, query_norm_sigma, query_mean_cos)
    return items, queries


@dataclass
class BenchRow:
    """One measured setting. ``qps`` is wall-clock, ``cpu_qps`` per CPU second of the process;
    ``speedup`` is over the batched exact search of all the queries on the run's clock."""

    index: str  # "exact", "ivf", "ivf-sq8-rflat", "ivf-pqfs-rflat", "hnsw"
    mips_to_l2: bool
    param: str  # "nprobe" / "efSearch" / ""
    value: int
    recall: float
    qps: float
    speedup: float
    build_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_qps: float = 0.0

    @property
    def label(self) -> str:
        """The variant: index type, nlist and k_factor where set, MIPS-to-L2 or not."""
        text = self.index
        if "nlist" in self.extra:
            text += f" nlist={self.extra['nlist']}"
        if "k_factor" in self.extra:
            text += f" k_factor={self.extra['k_factor']:g}"
        return text + (" +mips2l2" if self.mips_to_l2 else "")


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found_row & truth_row| / k over rows (-1 entries never match)."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


@dataclass
class _Timing:
    ids: np.ndarray
    wall: float  # median seconds of one batched search of all queries
    cpu: float
    ndis: float  # distances computed per query (Faiss IVF / HNSW statistics; 0 for others)
    ref_wall: float | None = None  # median seconds per query of the interleaved exact search
    ref_cpu: float | None = None


def _timed_search(
    index: ItemIndex,
    queries: np.ndarray,
    k: int,
    repeats: int,
    min_seconds: float = 0.0,
    reference: tuple[ItemIndex, np.ndarray] | None = None,
    **kw: Any,
) -> _Timing:
    """Time one batched search of ``queries``: median wall and CPU seconds, work per query.

    The search runs ``repeats`` times and then again until ``min_seconds`` of wall time have
    passed (at most 200 runs). Medians rather than minima: on a shared machine a search of a
    few milliseconds often fits in a quiet moment while one of seconds never does, so the best
    of a few runs would favour fast settings over slow ones (and over the exact search).
    With ``reference`` = (exact index, queries), every run is preceded by an exact search of
    those queries, so that both see the same machine load; their median seconds per query come
    back too. ``ndis``, the number of vectors whose distance to a query was computed, measures
    work independently of the load.
    """
    walls: list[float] = []
    cpus: list[float] = []
    ref_walls: list[float] = []
    ref_cpus: list[float] = []
    ids = None
    faiss.cvar.indexIVF_stats.reset()
    faiss.cvar.hnsw_stats.reset()
    while len(walls) < max(1, repeats) or (
        sum(walls) + sum(ref_walls) < min_seconds and len(walls) < 200
    ):
        if reference is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            reference[0].search(reference[1], k)
            ref_walls.append((time.perf_counter() - t0) / len(reference[1]))
            ref_cpus.append((time.process_time() - c0) / len(reference[1]))
        t0, c0 = time.perf_counter(), time.process_time()
        ids, _ = index.search(queries, k, **kw)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    assert ids is not None
    ndis = faiss.cvar.indexIVF_stats.ndis + faiss.cvar.hnsw_stats.ndis
    # process_time ticks coarsely on some systems: never report less than a microsecond
    timing = _Timing(
        ids,
        max(float(np.median(walls)), 1e-6),
        max(float(np.median(cpus)), 1e-6),
        ndis / (len(walls) * max(1, len(queries))),
    )
    if reference is not None:
        timing.ref_wall = max(float(np.median(ref_walls)), 1e-9)
        timing.ref_cpu = max(float(np.median(ref_cpus)), 1e-9)
    return timing


def pq_fastscan_m(dim: int) -> int:
    """Sub-quantizer count for 4-bit PQ fast-scan: the divisor of ``dim`` closest to dim / 3."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - dim / 3), -m))


def _ivf_family(
    items: np.ndarray,
    *,
    nlist: int,
    mips: bool,
    codes: tuple[str, ...],
    train_per_list: int,
    seed: int,
) -> list[tuple[str, ItemIndex, float]]:
    """IVF indexes over ``items`` sharing one trained coarse quantizer and list assignment.

    Returns (name, index, build seconds) per code; the quantizer's training and assignment
    time is counted in every variant's build seconds.
    """
    if mips:
        xb, max_norm = mips_augment_items(items)
        metric, quantizer = faiss.METRIC_L2, faiss.IndexFlatL2(xb.shape[1])
    else:
        xb, max_norm = items, None
        metric, quantizer = faiss.METRIC_INNER_PRODUCT, faiss.IndexFlatIP(xb.shape[1])
    n, dd = xb.shape
    t0 = time.perf_counter()
    # the k-means parameters an IVF index of this metric trains with (spherical for IP)
    cp = faiss.extract_index_ivf(faiss.index_factory(dd, f"IVF{nlist},Flat", metric)).cp
    cp.max_points_per_centroid = int(train_per_list)
    cp.seed = int(seed)
    clus = faiss.Clustering(dd, nlist, cp)
    rng = np.random.default_rng(seed)
    n_train = min(n, int(train_per_list) * nlist)
    sample = xb if n_train == n else xb[np.sort(rng.choice(n, n_train, replace=False))]
    clus.train(np.ascontiguousarray(sample), quantizer)
    _, assign = quantizer.search(xb, 1)
    assign = np.ascontiguousarray(assign.ravel(), dtype=np.int64)
    shared_s = time.perf_counter() - t0
    logger.info("IVF%d (mips_to_l2=%s): coarse quantizer %.1f s", nlist, mips, shared_s)
    out = []
    for code in codes:
        t0 = time.perf_counter()
        q = faiss.clone_index(quantizer)
        if code == "Flat":
            ivf = faiss.IndexIVFFlat(q, dd, nlist, metric)
            name, factory = "ivf", f"IVF{nlist},Flat"
        elif code == "SQ8":
            ivf = faiss.IndexIVFScalarQuantizer(q, dd, nlist, faiss.ScalarQuantizer.QT_8bit, metric)
            name, factory = "ivf-sq8-rflat", f"IVF{nlist},SQ8,RFlat"
        elif code == "PQfs":
            m = pq_fastscan_m(dd)
            ivf = faiss.IndexIVFPQFastScan(q, dd, nlist, m, 4, metric)
            name, factory = "ivf-pqfs-rflat", f"IVF{nlist},PQ{m}x4fs,RFlat"
        else:
            raise ValueError(f"unknown IVF code {code!r}; choose from {IVF_CODES}")
        ivf.own_fields = True
        q.this.disown()
        if not ivf.is_trained:  # the code's own training (SQ ranges, PQ codebooks)
            ivf.train(xb[np.sort(rng.choice(n, min(n, 65536), replace=False))])
        if code == "PQfs":  # add_core with a precomputed assignment crashes for fast-scan
            ivf.add(xb)
        else:
            ivf.add_core(n, faiss.swig_ptr(xb), None, faiss.swig_ptr(assign))
        index: faiss.Index = ivf
        if code != "Flat":
            index = faiss.IndexRefineFlat(ivf, faiss.swig_ptr(xb))
            ivf.this.disown()
            index.own_fields = True
        item_index = ItemIndex(
            index,
            kind="ivf" if code == "Flat" else "factory",
            metric="ip",
            dim=items.shape[1],
            params={"nlist": nlist, "nprobe": default_nprobe(nlist)}
            | ({} if code == "Flat" else {"factory": factory}),
            mips_to_l2=mips,
            max_norm=max_norm,
        )
        out.append((name, item_index, shared_s + time.perf_counter() - t0))
    return out


def run_benchmark(
    items: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 20,
    nlists: tuple[int | None, ...] = (None,),
    nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128),
    ivf_codes: tuple[str, ...] = ("Flat",),
    k_factors: tuple[float, ...] = (4,),
    train_per_list: int = 64,
    hnsw_m: int = 32,
    ef_construction: int = 100,
    ef_searches: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
    mips_variants: tuple[bool, ...] = (False, True),
    kinds: tuple[str, ...] = ("ivf", "hnsw"),
    repeats: int = 1,
    min_seconds: float = 0.0,
    paired: bool = False,
    clock: str = "wall",
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> list[BenchRow]:
    """Sweep nprobe (IVF variants) and efSearch (HNSW) against exact IP search.

    One row per setting; the first row is the exact search. Each search is timed ``repeats``
    times and for at least ``min_seconds`` (medians, see :func:`_timed_search`). ``clock``
    ("wall" or "cpu") picks the throughput the speed-ups use; they are always over the exact
    search of all the queries in one batched call. With ``paired`` every timed run of a
    setting is preceded by that exact search, and the setting's speed-up is over the
    interleaved exact runs (both see the same load; their throughput is kept in the row's
    ``extra``); otherwise it is over the faster of the exact searches timed at the start and
    the end of the run. ``meta``, when given, receives the exact search's throughput at the
    start and at the end of the run.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    items = as_float32_matrix(items, "items")
    queries = as_float32_matrix(queries, "queries")
    nq = len(queries)
    t0 = time.perf_counter()
    exact = build_index(items, "flat", "ip", mips_to_l2=False)
    exact_build = time.perf_counter() - t0
    first = _timed_search(exact, queries, k, repeats, min_seconds)
    wall, cpu = first.wall, first.cpu
    sweeper = _Sweeper(
        queries=queries,
        truth=first.ids,
        n_items=len(items),
        k=k,
        nprobes=nprobes,
        ef_searches=ef_searches,
        repeats=repeats,
        min_seconds=min_seconds,
        reference=(exact, queries) if paired else None,
    )
    exact_runs = [(nq / wall, nq / cpu)]
    exact_row = BenchRow("exact", False, "", 0, 1.0, nq / wall, 1.0, exact_build, {}, nq / cpu)
    sweeper.rows.append(exact_row)
    logger.info("exact: %.0f QPS, %.0f per CPU second", nq / wall, nq / cpu)
    for kind in kinds:
        for mips in mips_variants:
            if kind == "ivf":
                for nlist in nlists:
                    nl = default_nlist(len(items)) if nlist is None else int(nlist)
                    family = _ivf_family(
                        items, nlist=nl, mips=mips, codes=ivf_codes,
                        train_per_list=train_per_list, seed=seed,
                    )  # fmt: skip
                    sweeper.sweep_ivf_family(family, mips, nl, k_factors)
                    del family
            elif kind == "hnsw":
                sweeper.sweep_hnsw(items, mips, hnsw_m, ef_construction)
            else:
                raise ValueError(f"unknown index kind {kind!r}: use 'ivf' and/or 'hnsw'")

    # the exact search again, at the end: speed-ups use the faster of the two measurements
    last = _timed_search(exact, queries, k, repeats, min_seconds)
    exact_runs.append((nq / last.wall, nq / last.cpu))
    _set_speedups(sweeper.rows, exact_runs, clock, meta)
    return sweeper.rows


@dataclass
class _Sweeper:
    """How the settings of one run are measured (against the exact ``truth``) and the rows."""

    queries: np.ndarray
    truth: np.ndarray
    n_items: int
    k: int
    nprobes: tuple[int, ...]
    ef_searches: tuple[int, ...]
    repeats: int
    min_seconds: float
    reference: tuple[ItemIndex, np.ndarray] | None
    rows: list[BenchRow] = field(default_factory=list)

    def sweep(self, name: str, index: ItemIndex, mips: bool, build_s: float, extra: dict) -> None:
        """One row per nprobe (IVF) or efSearch (HNSW) value of a built index."""
        if index.kind == "hnsw":
            param, key, values = "efSearch", "ef_search", self.ef_searches
        else:
            param, key = "nprobe", "nprobe"
            values = tuple(v for v in self.nprobes if v <= extra["nlist"])
        nq = len(self.queries)
        for value in values:
            t = _timed_search(
                index,
                self.queries,
                self.k,
                self.repeats,
                self.min_seconds,
                self.reference,
                **{key: value},
            )
            rec = recall_at_k(t.ids, self.truth)
            info = dict(extra)
            if t.ndis > 0:  # share of the catalog whose distance each query computed
                info["scanned"] = round(t.ndis / self.n_items, 6)
            if t.ref_wall is not None and t.ref_cpu is not None:
                info["exact_qps_paired"] = round(1.0 / t.ref_wall, 2)
                info["exact_cpu_qps_paired"] = round(1.0 / t.ref_cpu, 2)
            row = BenchRow(
                name, mips, param, value, rec, nq / t.wall, 0.0, build_s, info, nq / t.cpu
            )
            self.rows.append(row)
            logger.info(
                "%s %s=%d recall@%d=%.4f %.0f QPS, %.0f per CPU s, %.3f%% scanned",
                row.label,
                param,
                value,
                self.k,
                rec,
                row.qps,
                row.cpu_qps,
                100 * info.get("scanned", 0.0),
            )

    def sweep_ivf_family(
        self,
        family: list[tuple[str, ItemIndex, float]],
        mips: bool,
        nlist: int,
        k_factors: tuple[float, ...],
    ) -> None:
        """Sweep every index of an IVF family; refined codes once per ``k_factor``."""
        for name, index, build_s in family:
            logger.info("built %s (mips_to_l2=%s) in %.1f s", name, mips, build_s)
            if index.kind == "ivf":
                self.sweep(name, index, mips, build_s, {"nlist": nlist})
            else:
                for kf in k_factors:
                    index.set_search_params(k_factor=kf)
                    extra = {"nlist": nlist, "k_factor": float(kf)}
                    extra["factory"] = index.params["factory"]
                    self.sweep(name, index, mips, build_s, extra)

    def sweep_hnsw(self, items: np.ndarray, mips: bool, hnsw_m: int, ef_construction: int) -> None:
        """Build an HNSW index over ``items`` and sweep its efSearch values."""
        t0 = time.perf_counter()
        index = build_index(
            items,
            "hnsw",
            "ip",
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            mips_to_l2=mips,
        )
        build_s = time.perf_counter() - t0
        logger.info("built hnsw (mips_to_l2=%s) in %.1f s", mips, build_s)
        self.sweep("hnsw", index, mips, build_s, {"M": hnsw_m})
        del index


def _set_speedups(
    rows: list[BenchRow],
    exact_runs: list[tuple[float, float]],
    clock: str,
    meta: dict[str, Any] | None,
) -> None:
    """Speed-ups on the run's clock over the batched exact search of all the queries: the
    interleaved (paired) one where a row has it, else the faster of those at the start and the
    end (also the exact row's QPS). ``meta``, when given, receives the clock and those exact
    throughputs."""
    ref_wall = max(r[0] for r in exact_runs)
    ref_cpu = max(r[1] for r in exact_runs)
    rows[0].qps, rows[0].cpu_qps = ref_wall, ref_cpu
    for row in rows:
        base_wall = row.extra.get("exact_qps_paired", ref_wall)
        base_cpu = row.extra.get("exact_cpu_qps_paired", ref_cpu)
        row.speedup = row.cpu_qps / base_cpu if clock == "cpu" else row.qps / base_wall
    if meta is not None:
        meta["clock"] = clock
        meta["exact_qps_start_end"] = [round(r[0], 1) for r in exact_runs]
        meta["exact_cpu_qps_start_end"] = [round(r[1], 1) for r in exact_runs]
