"""PNG plots of benchmark results (headless)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.results import run_tag, succeeded
from benchmarks.runs import MODELS, RECALL


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(results: Iterable[Mapping[str, Any]], x: str, y: str) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in results:
        if succeeded(r) and r.get(x) is not None and r.get(y) is not None:
            out.setdefault(r["model"], []).append((r[x], r[y]))
    return {k: sorted(v) for k, v in out.items()}


def write_plots(
    out_dir: str | os.PathLike,
    table: Sequence[Mapping[str, Any]] = (),
    ttq: Sequence[Mapping[str, Any]] = (),
    scaling: Sequence[Mapping[str, Any]] = (),
    meta: Mapping[str, Mapping[str, Any]] | None = None,
    suffix: str = "",
) -> list[Path]:
    """PNG plots (headless): Recall@20 vs factors and vs seconds per dataset (from the table and
    the time-to-quality curves), and seconds per epoch vs nnz and vs factors (scaling)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    meta = meta or {}

    def save(fig: Any, name: str) -> None:
        path = out / f"{name}{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for ds in dict.fromkeys(r["dataset"] for r in [*table, *ttq]):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds)
        rows = [r for r in table if r["dataset"] == ds]
        if rows:
            save(_recall_vs_factors(plt, ds, rows), f"recall_vs_factors_{safe}")
        curves = [r for r in ttq if r["dataset"] == ds and succeeded(r)]
        if rows or curves:
            save(_recall_vs_seconds(plt, ds, rows, curves), f"recall_vs_seconds_{safe}")
    nnz_rows = [r for r in scaling if run_tag(r, "sweep") == "nnz"]
    if nnz_rows:
        save(_seconds_vs_nnz(plt, nnz_rows, meta), "seconds_vs_nnz")
    f_rows = [r for r in scaling if run_tag(r, "sweep") == "factors"]
    if f_rows:
        save(_seconds_vs_factors(plt, f_rows), "seconds_vs_factors")
    return written


def _recall_vs_factors(plt: Any, ds: str, rows: Sequence[Mapping[str, Any]]) -> Any:
    """Recall@20 against factors on one dataset, one line per model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, pts in _series(rows, "factors", RECALL).items():
        ax.plot(*zip(*pts, strict=True), marker="o", label=model, color=_color(model))
    ax.set(xscale="log", xlabel="factors", ylabel="Recall@20", title=f"{ds}: quality")
    ax.set_xticks(sorted({r["factors"] for r in rows}))
    _plain_ticks(ax)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _recall_vs_seconds(
    plt: Any, ds: str, rows: Sequence[Mapping[str, Any]], curves: Sequence[Mapping[str, Any]]
) -> Any:
    """Recall@20 against wall-clock seconds on one dataset: the time-to-quality curves (training
    plus evaluation per epoch) and the table's runs after fit, labelled with their factors."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs_all: list[float] = []
    for j, r in enumerate(curves):
        xs = [c["seconds"] for c in r["curve"]]
        ys = [c[RECALL] for c in r["curve"]]
        xs_all += xs
        ax.plot(
            xs,
            ys,
            marker=".",
            color=_color(r["model"]),
            linestyle=("-", "--", "-.", ":")[j % 4],
            label=f"{r['model']} f={r['factors']}: per epoch, training + evaluation",
        )
    if curves:
        ax.axhline(
            curves[0]["target"],
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"target {curves[0]['target']:g}",
        )
    for model, pts in _series(rows, "fit_seconds", RECALL).items():
        xs, ys = zip(*pts, strict=True)
        xs_all += xs
        ax.scatter(
            xs, ys, marker="s", color=_color(model), label=f"{model}: after fit (fit seconds)"
        )
    for r in rows:
        if succeeded(r) and r.get(RECALL) is not None:
            ax.annotate(
                f"f={r['factors']}",
                (r["fit_seconds"], r[RECALL]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:
        from matplotlib.ticker import LogLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        _plain_ticks(ax)
    ax.set(xlabel="wall-clock seconds", ylabel="Recall@20", title=f"{ds}: quality against time")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def _seconds_vs_nnz(
    plt: Any, nnz_rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Mapping[str, Any]]
) -> Any:
    """Seconds per epoch against training nnz (the scaling sweep "nnz"), log-log."""
    fig, ax = plt.subplots(figsize=(6, 4))
    pts: dict[str, list[tuple]] = {}
    for r in nnz_rows:
        nnz = meta.get(r["dataset"], {}).get("train_nnz")
        if succeeded(r) and nnz:
            pts.setdefault(r["model"], []).append((nnz, r["seconds_per_epoch"]))
    for model, p in pts.items():
        f = nnz_rows[0]["factors"]
        ax.plot(
            *zip(*sorted(p), strict=True),
            marker="o",
            label=f"{model} f={f}",
            color=_color(model),
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training nnz",
        ylabel="seconds per epoch",
        title="cost against nnz",
    )
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


def _seconds_vs_factors(plt: Any, f_rows: Sequence[Mapping[str, Any]]) -> Any:
    """Seconds per epoch against factors (the scaling sweep "factors"), log-log."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, p in _series(f_rows, "factors", "seconds_per_epoch").items():
        ax.plot(*zip(*p, strict=True), marker="o", label=model, color=_color(model))
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="factors",
        ylabel="seconds per epoch",
        title=f"cost against factors ({f_rows[0]['dataset']})",
    )
    ax.set_xticks(sorted({r["factors"] for r in f_rows}))
    _plain_ticks(ax)
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


def _color(model: str) -> str:
    """One colour per model across all plots."""
    names = list(MODELS)
    return f"C{names.index(model) if model in names else len(names)}"


def _plain_ticks(ax: Any) -> None:
    """Plain numbers on a log x axis (factors 32, 64, ...; seconds 20, 50, ...), no minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(NullFormatter())
