"""The run report: ``report.md`` and its PNG plots, readable without TensorBoard.

``report.md`` holds the final metrics table (test, or validation for a tuning trial; the same
numbers as ``metrics.json``), the training outcome (epochs, the best epoch, whether early stopping
fired), the data summary and the settings. The plots (matplotlib, drawn on the Agg canvas without
touching pyplot's global backend) show the loss and its parts per epoch, the validation objective
per evaluation, the user and item factor norms, item popularity against how often each item is
recommended (the long tail) and the score distribution. Without matplotlib (it comes with the
``dev`` extra) the plots are skipped with one logged line and the markdown is still written. Every
file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.config import flatten
from recsys.eval import markdown_metrics
from recsys.io import atomic_path
from recsys.pipeline.artifacts import PLOT_FILES, REPORT_FILE, atomic_write_text
from recsys.pipeline.job import logger
from recsys.pipeline.tracking import LOSS_TAGS, loss_parts

__all__ = ["LIST_USERS", "can_plot", "new_figure", "report_lists", "save_png", "write_report"]

#: The long-tail and score plots rank the top-k lists of at most this many users (a seeded
#: sample): enough for stable exposure counts, and a bounded cost on large catalogs.
LIST_USERS = 10_000

_DATA_PARTS = ("full", "train", "test", "fit", "validation", "fold_in")


def report_lists(
    model: Any, seen: sp.csr_matrix, k: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, scores)``: the top-`k` lists (seen items excluded) of up to :data:`LIST_USERS`
    users with training items, the users a seeded sample."""
    from recsys.scoring import topk_items

    seen = sp.csr_matrix(seen)
    users = np.flatnonzero(np.diff(seen.indptr) > 0)
    if users.size > LIST_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, LIST_USERS, replace=False))
    top = topk_items(
        model.user_embeddings(users), model.item_embeddings(), min(k, seen.shape[1]),
        exclude=seen[users], device=model.device,
    )  # fmt: skip
    return top.ids.cpu().numpy(), top.scores.cpu().numpy()


def write_report(
    out: Path,
    metrics: Mapping[str, float],
    metadata: Mapping[str, Any],
    model: Any,
    seen: sp.csr_matrix,
) -> dict[str, Path]:
    """Write the plots, then ``report.md`` into the run folder `out`; ``{name: path}`` of the
    files written. `metadata` is the run's ``metadata.json`` record, `seen` its training matrix
    (the popularity of the long-tail plot and the items excluded from the lists)."""
    plots = _write_plots(out, metadata, model, seen) if can_plot("report") else {}
    text = _markdown(metrics, metadata, plots)
    return {**plots, "report": atomic_write_text(out / REPORT_FILE, text)}


# ------------------------------------------------------------------------------ markdown
def _markdown(
    metrics: Mapping[str, float], metadata: Mapping[str, Any], plots: Mapping[str, Path]
) -> str:
    split = metadata["objective"].get("split", "test")
    sections = [
        "# Run report",
        f"## {split.capitalize()} metrics\n\n" + markdown_metrics(metrics),
        "## Training\n\n" + _training(metrics, metadata),
        "## Data\n\n" + _data_table(metadata["data"]),
        "## Settings\n\n" + _settings(metadata),
    ]
    if plots:
        sections.append(
            "## Plots\n\n" + "\n\n".join(f"![{name}]({path.name})" for name, path in plots.items())
        )
    return "\n\n".join(sections) + "\n"


def _training(metrics: Mapping[str, float], metadata: Mapping[str, Any]) -> str:
    """Epochs run, the best epoch and its validation value, and how training ended."""
    objective = metadata["objective"]["name"]
    iterations = metadata["config"]["als"]["iterations"]
    lines = [f"- epochs run: {metadata['epochs']} of {iterations}"]
    best = metadata.get("best_epoch")
    if best is None:
        lines.append("- best epoch: none evaluated (the model of the last epoch is kept)")
    else:
        value = metrics.get(f"validation_{objective}")
        lines.append(f"- best epoch: {best} (validation {objective} = {_number(value)}), kept")
    if metadata.get("stopped_early"):
        lines.append(f"- early stopping fired after epoch {metadata['epochs']}")
    split = metadata["objective"].get("split", "test")
    lines.append(f"- {split} {objective}: {_number(metadata['objective']['value'])}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _data_table(data: Mapping[str, Any]) -> str:
    lines = ["| part | users | items | interactions | density |", "|---|---|---|---|---|"]
    for part in _DATA_PARTS:
        stats = data.get(part)
        if stats:
            lines.append(
                f"| {part} | {stats['n_users']} | {stats['n_items']} | {stats['nnz']} | "
                f"{stats['density']:.3g} |"
            )
    return "\n".join(lines)


def _settings(metadata: Mapping[str, Any]) -> str:
    overrides = " ".join(metadata.get("overrides") or []) or "(none)"
    lines = [f"Command-line overrides: `{overrides}`", "", "| key | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in flatten(metadata["config"]).items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ plots
def _write_plots(
    out: Path, metadata: Mapping[str, Any], model: Any, seen: sp.csr_matrix
) -> dict[str, Path]:
    """Each plot that has data, saved as a PNG; ``{name: path}``."""
    objective = metadata["objective"]["name"]
    _, _, at = objective.partition("@")
    ids, scores = report_lists(model, seen, int(at) if at.isdigit() else 20)
    drawers = {
        "loss": lambda fig: _plot_loss(fig, metadata["history"]),
        "validation": lambda fig: _plot_validation(fig, metadata["evaluations"], objective),
        "factor_norms": lambda fig: _plot_norms(fig, model),
        "long_tail": lambda fig: _plot_long_tail(fig, seen, ids),
        "scores": lambda fig: _plot_scores(fig, scores),
    }
    written = {}
    for name, draw in drawers.items():
        fig = new_figure()
        if draw(fig):
            written[name] = save_png(fig, out / PLOT_FILES[name])
    return written


def can_plot(what: str) -> bool:
    """Whether matplotlib is installed (the ``dev`` extra); without it, one logged line saying
    that `what` (e.g. ``report``) gets no plots."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        logger.info("%s: matplotlib is not installed (the dev extra); no plots", what)
        return False
    return True


def new_figure() -> Any:
    """A matplotlib figure on its own Agg canvas (pyplot's global backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> Path:
    """Save `fig` as a PNG at `path`, atomically; `path`."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _plot_loss(fig: Any, history: list[Mapping[str, Any]]) -> bool:
    """The loss and its parts per epoch (False when no epoch computed it)."""
    parts = [(h["epoch"], loss_parts(h)) for h in history]
    ax = fig.add_subplot()
    drawn = False
    for tag in LOSS_TAGS:
        points = [(epoch, found[tag]) for epoch, found in parts if tag in found]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=tag.removeprefix("loss/"))
            drawn = True
    ax.set(xlabel="epoch", ylabel="loss", title="Training loss and its parts")
    if drawn:
        ax.legend()
    return drawn


def _plot_validation(fig: Any, evaluations: list[Mapping[str, Any]], objective: str) -> bool:
    points = [(e["epoch"], e[objective]) for e in evaluations if objective in e]
    if not points:
        return False
    ax = fig.add_subplot()
    ax.plot(*zip(*points, strict=True), marker="o")
    ax.set(xlabel="epoch", ylabel=objective, title=f"Validation {objective}")
    return True


def _plot_norms(fig: Any, model: Any) -> bool:
    for i, (side, factors) in enumerate((("user", model.user_factors),
                                         ("item", model.item_factors))):  # fmt: skip
        ax = fig.add_subplot(1, 2, i + 1)
        ax.hist(factors.detach().double().norm(dim=1).cpu().numpy(), bins=50)
        ax.set(xlabel="factor norm", ylabel=f"{side}s", title=f"{side.capitalize()} factor norms")
    return True


def _plot_long_tail(fig: Any, seen: sp.csr_matrix, ids: np.ndarray) -> bool:
    """Items by training popularity (most popular first): their popularity and how often they
    appear in the top-k lists."""
    popularity = np.bincount(seen.indices, minlength=seen.shape[1])
    exposure = np.bincount(ids[ids >= 0], minlength=seen.shape[1])
    order = np.argsort(-popularity, kind="stable")
    ax = fig.add_subplot()
    rank = np.arange(1, order.size + 1)
    ax.plot(rank, popularity[order], label="training interactions")
    ax.plot(rank, exposure[order], ".", markersize=2, label=f"in top-{ids.shape[1]} lists")
    ax.set(xscale="log", yscale="symlog", xlabel="item popularity rank", ylabel="count",
           title=f"Long tail: popularity vs recommendations ({ids.shape[0]} users)")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.legend()
    return True


def _plot_scores(fig: Any, scores: np.ndarray) -> bool:
    values = scores[np.isfinite(scores)]
    if values.size == 0:
        return False
    ax = fig.add_subplot()
    ax.hist(values, bins=60)
    ax.set(xlabel="score", ylabel="list slots",
           title=f"Scores of the top-{scores.shape[1]} lists")  # fmt: skip
    return True
