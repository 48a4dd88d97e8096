"""Recall / throughput benchmark of approximate item indexes against exact search.

Used by ``scripts/benchmark_index.py``. The synthetic catalog imitates ALS item factors (see
:func:`synthetic_catalog`: heavy-tailed norms, a shared popularity direction, low-rank topic
structure). Users (queries) are drawn the same way. Ground truth is exact
inner-product search (a Flat IP index); recall@k = |approximate top-k & exact top-k| / k,
averaged over queries; QPS is measured on one batched search call of all queries.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.index.builder import build_index, default_nlist
from recsys.index.item_index import ItemIndex

logger = logging.getLogger(__name__)


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

    Calibrated on implicit-feedback ALS factors (64 factors fitted on Gowalla), whose item norms
    are log-normal with a log-std of about 0.9 (max / median norm of about 60 over 41k items),
    whose item directions share a common "popularity" direction (median cosine to the mean
    direction about 0.45; users about 0.1) and whose remaining directions have an effective rank
    of about 3/4 of the dimension. Here a direction is ``mean_cos`` parts a shared unit vector
    plus a topic component (one of ``n_topics`` centres in a ``rank``-dim subspace, default
    3/4 of ``dim``, with a decaying spectrum, plus within-topic spread) plus isotropic noise;
    norms are log-normal.
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
    """One measured setting."""

    index: str  # "exact", "ivf", "hnsw"
    mips_to_l2: bool
    param: str  # "nprobe" / "efSearch" / ""
    value: int
    recall: float
    qps: float
    speedup: float
    build_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.index}{' +mips2l2' if self.mips_to_l2 else ''}"


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found_row & truth_row| / k over rows (-1 entries never match)."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


def _timed_search(
    index: ItemIndex, queries: np.ndarray, k: int, repeats: int, **kw: Any
) -> tuple[np.ndarray, float]:
    best = np.inf
    ids = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids, _ = index.search(queries, k, **kw)
        best = min(best, time.perf_counter() - t0)
    assert ids is not None
    return ids, best


def run_benchmark(
    items: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 20,
    nlist: int | None = None,
    nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128),
    hnsw_m: int = 32,
    ef_construction: int = 100,
    ef_searches: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
    mips_variants: tuple[bool, ...] = (False, True),
    kinds: tuple[str, ...] = ("ivf", "hnsw"),
    repeats: int = 1,
) -> list[BenchRow]:
    """Sweep nprobe (IVF) and efSearch (HNSW) against exact IP search; one row per setting."""
    rows: list[BenchRow] = []
    t0 = time.perf_counter()
    exact = build_index(items, "flat", "ip", mips_to_l2=False)
    exact_build = time.perf_counter() - t0
    truth, t_exact = _timed_search(exact, queries, k, repeats)
    exact_qps = len(queries) / t_exact
    rows.append(BenchRow("exact", False, "", 0, 1.0, exact_qps, 1.0, exact_build))
    logger.info("exact: %.0f QPS", exact_qps)
    del exact
    for kind in kinds:
        for mips in mips_variants:
            t0 = time.perf_counter()
            if kind == "ivf":
                index = build_index(items, "ivf", "ip", nlist=nlist, mips_to_l2=mips)
                sweep, param, key = nprobes, "nprobe", "nprobe"
            else:
                index = build_index(
                    items,
                    "hnsw",
                    "ip",
                    hnsw_m=hnsw_m,
                    ef_construction=ef_construction,
                    mips_to_l2=mips,
                )
                sweep, param, key = ef_searches, "efSearch", "ef_search"
            build_s = time.perf_counter() - t0
            logger.info("built %s (mips_to_l2=%s) in %.1f s", kind, mips, build_s)
            extra = {"nlist": index.params["nlist"]} if kind == "ivf" else {"M": hnsw_m}
            for value in sweep:
                if kind == "ivf" and value > index.params["nlist"]:
                    continue
                ids, t = _timed_search(index, queries, k, repeats, **{key: value})
                qps = len(queries) / t
                rec = recall_at_k(ids, truth)
                rows.append(
                    BenchRow(
                        kind, mips, param, value, rec, qps, qps / exact_qps, build_s, dict(extra)
                    )
                )
                logger.info(
                    "%s mips=%s %s=%d recall@%d=%.4f %.0f QPS",
                    kind,
                    mips,
                    param,
                    value,
                    k,
                    rec,
                    qps,
                )
            del index
    return rows


def operating_points(rows: list[BenchRow], target: float = 0.95) -> dict[str, BenchRow | None]:
    """Per index variant, the fastest setting whose recall reaches ``target`` (or None)."""
    out: dict[str, BenchRow | None] = {}
    for row in rows:
        if row.index == "exact":
            continue
        best = out.get(row.label)
        if row.recall >= target and (best is None or row.qps > best.qps):
            out[row.label] = row
        else:
            out.setdefault(row.label, None)
    return out


def markdown_table(rows: list[BenchRow], k: int, target: float = 0.95) -> str:
    """The sweep as a markdown table plus one line per variant's operating point."""
    lines = [
        f"| index | MIPS->L2 | parameter | value | recall@{k} | QPS | speed-up vs exact |"
        " build s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.index} | {'yes' if r.mips_to_l2 else 'no'} | {r.param or '-'} | "
            f"{r.value if r.param else '-'} | {r.recall:.4f} | {r.qps:,.0f} | "
            f"{r.speedup:.1f}x | {r.build_s:.1f} |"
        )
    lines.append("")
    for label, r in operating_points(rows, target).items():
        if r is None:
            lines.append(f"- {label}: no setting reached recall@{k} >= {target}")
        else:
            lines.append(
                f"- {label}: {r.param}={r.value} gives recall@{k} {r.recall:.4f} at "
                f"{r.qps:,.0f} QPS ({r.speedup:.1f}x exact)"
            )
    return "\n".join(lines)


def write_json(rows: list[BenchRow], path: str | Path, meta: dict[str, Any]) -> None:
    """Rows and run metadata (sizes, threads, faiss version) as JSON."""
    payload = {"meta": meta, "rows": [asdict(r) for r in rows]}
    Path(path).write_text(json.dumps(payload, indent=2), encoding="utf-8")


def plot_curves(rows: list[BenchRow], path: str | Path, k: int, title: str = "") -> None:
    """Recall@k vs QPS per variant (log QPS axis), with the exact search as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = sorted({r.label for r in rows if r.index != "exact"})
    for label in labels:
        pts = [r for r in rows if r.label == label]
        ax.plot([r.recall for r in pts], [r.qps for r in pts], marker="o", label=label)
        for r in pts:
            ax.annotate(str(r.value), (r.recall, r.qps), fontsize=7, alpha=0.7)
    exact = [r for r in rows if r.index == "exact"]
    if exact:
        ax.axhline(exact[0].qps, color="k", ls="--", lw=1, label="exact")
        ax.axhline(10 * exact[0].qps, color="gray", ls=":", lw=1, label="10x exact")
    ax.axvline(0.95, color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k}")
    ax.set_ylabel("queries per second")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_meta(items: np.ndarray, queries: np.ndarray, k: int, **extra: Any) -> dict[str, Any]:
    """Metadata for a run: sizes, k, Faiss threads and version, plus anything given."""
    return {
        "n_items": int(items.shape[0]),
        "dim": int(items.shape[1]),
        "n_queries": int(queries.shape[0]),
        "k": k,
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_version": faiss.__version__,
        "default_nlist": default_nlist(items.shape[0]),
        **extra,
    }
