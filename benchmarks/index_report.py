"""Reports of the index benchmark: operating points, markdown table, JSON, plot, run metadata."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.index import BenchRow
from recsys.index import default_nlist


def operating_points(rows: list[BenchRow], target: float = 0.95) -> dict[str, BenchRow | None]:
    """Per index variant, the fastest setting whose recall reaches ``target`` (or None)."""
    out: dict[str, BenchRow | None] = {}
    for row in rows:
        if row.index == "exact":
            continue
        best = out.get(row.label)
        if row.recall >= target and (best is None or row.speedup > best.speedup):
            out[row.label] = row
        else:
            out.setdefault(row.label, None)
    return out


def mips_comparison(rows: list[BenchRow], target: float = 0.95) -> list[str]:
    """Per variant run both ways, whether native IP or the MIPS-to-L2 transform is better.

    Better = a higher speed-up at ``target`` recall; when neither reaches it, the higher best
    recall.
    """
    points = operating_points(rows, target)
    best_recall: dict[str, float] = {}
    for row in rows:
        best_recall[row.label] = max(best_recall.get(row.label, 0.0), row.recall)
    lines = []
    for label, point in points.items():
        if label.endswith(" +mips2l2"):
            continue
        mips_label = label + " +mips2l2"
        if mips_label not in points:
            continue
        native, mips = point, points[mips_label]
        if native is not None or mips is not None:
            win = (
                mips_label if native is None or (mips and mips.speedup > native.speedup) else label
            )
            why = f"faster at recall >= {target}"
        else:
            win = mips_label if best_recall[mips_label] > best_recall[label] else label
            why = (
                f"higher best recall ({best_recall[mips_label]:.4f} with, "
                f"{best_recall[label]:.4f} without the transform)"
            )
        lines.append(f"- {label}: {'MIPS-to-L2' if win == mips_label else 'native IP'} ({why})")
    return lines


def markdown_table(rows: list[BenchRow], k: int, target: float = 0.95) -> str:
    """The sweep as a markdown table plus one line per variant's operating point."""
    lines = [
        f"| index | MIPS->L2 | parameter | value | recall@{k} | QPS | QPS per CPU s |"
        " speed-up vs batched exact (all queries) | catalog scanned | build s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = r.label.replace(" +mips2l2", "")
        lines.append(
            f"| {name} | {'yes' if r.mips_to_l2 else 'no'} | {r.param or '-'} | "
            f"{r.value if r.param else '-'} | {r.recall:.4f} | {r.qps:,.0f} | "
            f"{r.cpu_qps:,.0f} | {r.speedup:.1f}x | {_scanned(r)} | {r.build_s:.1f} |"
        )
    lines.append("")
    for label, r in operating_points(rows, target).items():
        if r is None:
            lines.append(f"- {label}: no setting reached recall@{k} >= {target}")
        else:
            lines.append(
                f"- {label}: {r.param}={r.value} gives recall@{k} {r.recall:.4f} at "
                f"{r.speedup:.1f}x exact ({r.qps:,.0f} QPS, {r.cpu_qps:,.0f} per CPU s)"
            )
    comparison = mips_comparison(rows, target)
    if comparison:
        lines += ["", "MIPS-to-L2 or native IP, per variant:", *comparison]
    return "\n".join(lines)


def _scanned(row: BenchRow) -> str:
    if row.index == "exact":
        return "100%"
    share = row.extra.get("scanned")
    return "-" if share is None else f"{100 * share:.2f}%"


def write_json(rows: list[BenchRow], path: str | Path, meta: dict[str, Any]) -> None:
    """Rows and run metadata (sizes, threads, faiss version) as JSON."""
    payload = {"meta": meta, "rows": [asdict(r) | {"label": r.label} for r in rows]}
    Path(path).write_text(json.dumps(payload, indent=2), encoding="utf-8")


def plot_curves(
    rows: list[BenchRow], path: str | Path, k: int, title: str = "", target: float = 0.95
) -> None:
    """Speed-up over the batched exact search vs recall@k per variant (log axis), 10x and target
    lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    labels = sorted({r.label for r in rows if r.index != "exact"})
    for label in labels:
        pts = [r for r in rows if r.label == label]
        ax.plot(
            [r.recall for r in pts],
            [r.speedup for r in pts],
            marker="o",
            ms=3,
            ls="--" if "+mips2l2" not in label else "-",
            label=label,
        )
        for r in pts:
            ax.annotate(str(r.value), (r.recall, r.speedup), fontsize=6, alpha=0.6)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="exact search")
    ax.axhline(10.0, color="gray", ls=":", lw=1, label="10x exact")
    ax.axvline(target, color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k} (vs exact inner-product search)")
    ax.set_ylabel("speed-up over batched exact search (all queries)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
