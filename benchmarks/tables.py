"""Markdown tables of benchmark results (results.md)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from benchmarks.results import run_tag, succeeded
from benchmarks.runs import EXACT_PEER_MODEL, NDCG, RECALL


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -(digits - 1):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 3 decimals, None and NaN print as '-'."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_num(c) for c in row) + " |")
    return "\n".join(out)


def _with_exact_peer(results: Sequence[Mapping[str, Any]]) -> bool:
    """Whether LensKit ran: the tables then add the ours / LensKit columns."""
    return any(r["model"] == EXACT_PEER_MODEL for r in results)


def comparison_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The main table: speed, memory and quality per (dataset, model, factors); the ours / LensKit
    ratios too when LensKit ran."""
    peer = _with_exact_peer(results)
    headers = [
        "dataset",
        "model",
        "device",
        "factors",
        "epochs",
        "s/epoch (median)",
        "fit s",
        "peak RSS MiB",
        "GPU peak MiB",
        "Recall@20",
        "NDCG@20",
        "ours/implicit s/epoch",
        "ours/implicit fit s",
        *(["ours/LensKit s/epoch", "ours/LensKit fit s"] if peer else []),
    ]
    rows = []
    for r in results:
        if not succeeded(r):
            rows.append(
                [r["dataset"], r["model"], r["device"], r["factors"], f"failed: {r['error'][:80]}"]
                + ["-"] * (len(headers) - 5)
            )
            continue
        peer_ratios = [r.get("ratio_exact_peer_epoch"), r.get("ratio_exact_peer_fit")]
        rows.append(
            [
                r["dataset"],
                r["model"],
                r["device"],
                r["factors"],
                r["epochs"],
                r["seconds_per_epoch"],
                r["fit_seconds"],
                r["peak_rss_mb"],
                r.get("cuda_peak_mb"),
                r.get(RECALL),
                r.get(NDCG),
                r.get("ratio_epoch"),
                r.get("ratio_fit"),
                *(peer_ratios if peer else []),
            ]
        )
    return markdown_table(headers, rows)


def rounds_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Speed over interleaved rounds (``--rounds``): per (dataset, model, factors), the median of
    the runs' seconds per epoch and of the per-round ratios ours / implicit (and ours / LensKit
    when LensKit ran), with their ranges.

    Each ratio divides runs of the same round, which ran next to each other, so a slow spell of
    a shared machine moves both sides of a ratio; the range shows how much the ratio still moved.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in results:
        if succeeded(r) and run_tag(r, "round") is not None:
            key = (r["dataset"], r["model"], r["device"], r["factors"])
            groups.setdefault(key, []).append(r)

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    headers = [
        "dataset",
        "model",
        "device",
        "factors",
        "rounds",
        "s/epoch: median (range)",
        "ours/implicit s/epoch: median (range)",
    ]
    keys = ["ratio_epoch"]
    if _with_exact_peer(results):
        headers.append("ours/LensKit s/epoch: median (range)")
        keys.append("ratio_exact_peer_epoch")
    rows = []
    for (dataset, model, device, factors), runs in groups.items():
        ratios = [[r[k] for r in runs if r.get(k) is not None] for k in keys]
        rows.append(
            [
                dataset,
                model,
                device,
                factors,
                len(runs),
                spread([r["seconds_per_epoch"] for r in runs]),
                *(spread(x) for x in ratios),  # "-" for the other libraries, which have no ratio
            ]
        )
    return markdown_table(headers, rows)


def ttq_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Time to quality: seconds (training + per-epoch evaluation) until Recall@20 >= target."""
    headers = [
        "dataset",
        "model",
        "device",
        "factors",
        "target",
        "reached at epoch",
        "seconds to target",
        "best Recall@20",
        "eval s (total)",
        "ours/implicit",
    ]
    rows = []
    for r in results:
        if not succeeded(r):
            rows.append(
                [r["dataset"], r["model"], r["device"], r["factors"], f"failed: {r['error'][:80]}"]
                + ["-"] * 5
            )
            continue
        epoch = next((c["epoch"] for c in r["curve"] if c[RECALL] >= r["target"]), None)
        rows.append(
            [
                r["dataset"],
                r["model"],
                r["device"],
                r["factors"],
                r["target"],
                epoch if epoch is not None else f"no ({r['stopped']}, {len(r['curve'])} epochs)",
                r.get("seconds_to_target"),
                r.get(RECALL),
                r.get("eval_seconds"),
                r.get("ratio_ttq") if r["library"] == "ours" else None,
            ]
        )
    return markdown_table(headers, rows)


def scaling_table(results: Sequence[Mapping[str, Any]], meta: Mapping[str, Mapping]) -> str:
    """Seconds per epoch against nnz and factors."""
    headers = [
        "sweep",
        "dataset",
        "users",
        "items",
        "train nnz",
        "model",
        "factors",
        "s/epoch (median)",
        "peak RSS MiB",
        "ours/implicit s/epoch",
    ]
    rows = []
    for r in results:
        m = meta.get(r["dataset"], {})
        lead = [
            run_tag(r, "sweep", "-"),
            r["dataset"],
            m.get("n_users"),
            m.get("n_items"),
            m.get("train_nnz"),
            r["model"],
            r["factors"],
        ]
        if not succeeded(r):
            rows.append([*lead, f"failed: {r['error'][:80]}", "-", "-"])
            continue
        rows.append([*lead, r["seconds_per_epoch"], r["peak_rss_mb"], r.get("ratio_epoch")])
    return markdown_table(headers, rows)
