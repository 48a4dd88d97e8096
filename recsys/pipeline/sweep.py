"""The summary of a sweep (``train.py -m``): its finished jobs, best first, in markdown, with plots.

Each job folder of the sweep holds ``metadata.json`` (its overrides and objective) and
``metrics.json`` once complete. :func:`write_sweep_summary` reads them and writes
``summary.md`` into the sweep folder: the overrides every job shares, then one row per job with
the overrides that differ between jobs, its objective, epochs and training seconds, sorted by
the objective (smallest first when the objective is minimised). The objective's column says the
split it was measured on (``metadata.json``'s ``objective.split``; runs that predate it measured
the test split), so a tuning study's validation numbers are never read as test results.
Unfinished jobs are left out, so rewriting it after every job keeps it current while the sweep
runs.

Next to it: one PNG per swept parameter, the objective against the parameter's values with the
best job marked (``objective_vs_<key>.png``), and, given the parameter importances of a study,
their bar chart (:data:`IMPORTANCE_PLOT`). The plots need matplotlib (the ``dev`` extra); without
it they are skipped with one logged line, as the run report does. Every file is written
atomically.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from recsys.pipeline.artifacts import METADATA_FILE, METRICS_FILE, atomic_write_text, read_json
from recsys.pipeline.report import can_plot, new_figure, save_png

__all__ = [
    "IMPORTANCE_PLOT",
    "LOG_SPAN",
    "SUMMARY_FILE",
    "Scale",
    "objective_plot_name",
    "parameter_scale",
    "sweep_jobs",
    "write_sweep_summary",
]

SUMMARY_FILE = "summary.md"
#: the bar chart of the parameter importances
IMPORTANCE_PLOT = "param_importances.png"
#: a numeric parameter whose values are all positive and span more than this factor is plotted
#: on a log axis (a regularization swept over 0.001..1 would otherwise crowd into one corner)
LOG_SPAN = 20.0

#: how a parameter's values are laid out on the x axis
Scale = Literal["linear", "log", "category"]


def sweep_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The complete jobs under `sweep_dir`, best first: ``{"job", "overrides", "objective",
    "split", "value", "minimize", "epochs", "train_seconds"}`` each (a missing value sorts
    last; ``split`` is ``test`` for runs whose metadata does not name one)."""
    jobs = []
    for folder in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        if not (folder / METRICS_FILE).is_file() or not (folder / METADATA_FILE).is_file():
            continue
        meta, metrics = read_json(folder / METADATA_FILE), read_json(folder / METRICS_FILE)
        objective = meta["objective"]
        jobs.append({
            "job": folder.name,
            "overrides": dict(o.partition("=")[::2] for o in meta.get("overrides") or []),
            "objective": objective["name"],
            "split": objective.get("split", "test"),
            "value": objective["value"],
            "minimize": bool(objective["minimize"]),
            "epochs": metrics.get("epochs"),
            "train_seconds": metrics.get("train_seconds"),
        })  # fmt: skip

    def rank(job: dict[str, Any]) -> tuple[bool, float]:
        if not _finite(job):
            return True, 0.0
        return False, job["value"] if job["minimize"] else -job["value"]

    return sorted(jobs, key=rank)


def parameter_scale(values: Sequence[str]) -> Scale:
    """How to lay out a swept parameter's values (as written in the overrides) on the x axis:
    ``category`` when any is not a finite number (``true``/``false``, names, lists), ``log``
    when all are positive and the largest exceeds :data:`LOG_SPAN` times the smallest, else
    ``linear``."""
    numbers = []
    for value in values:
        try:
            number = float(value)
        except ValueError:
            return "category"
        if not math.isfinite(number):
            return "category"
        numbers.append(number)
    if numbers and min(numbers) > 0 and max(numbers) > LOG_SPAN * min(numbers):
        return "log"
    return "linear"


def objective_plot_name(key: str) -> str:
    """The file name of the plot of the objective against the override `key`: the key's dots
    kept, any other character that is not a letter, digit, ``-`` or ``_`` (``+`` of ``+key=``,
    ``/`` of a config group) replaced by ``_``."""
    return "objective_vs_" + re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".png"


def write_sweep_summary(
    sweep_dir: Path, *, importances: Mapping[str, float] | None = None
) -> Path | None:
    """Write ``summary.md`` and its plots (atomically) into `sweep_dir`; the summary's path, or
    None without a complete job yet. `importances` (``{parameter: importance}``, e.g. from
    :func:`recsys.tuning.importance.param_importances`) adds their table and bar chart."""
    jobs = sweep_jobs(sweep_dir)
    if not jobs:
        return None
    sweep_dir = Path(sweep_dir)
    keys = list(dict.fromkeys(k for job in jobs for k in job["overrides"]))
    varying = [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]
    plots: dict[str, Path] = {}
    if (varying or importances) and can_plot("sweep summary"):
        plots = _write_plots(sweep_dir, jobs, varying, importances)
    text = _markdown(jobs, keys, varying, importances or {}, plots)
    return atomic_write_text(sweep_dir / SUMMARY_FILE, text)


# ------------------------------------------------------------------------------ markdown
def _markdown(
    jobs: list[dict[str, Any]],
    keys: list[str],
    varying: list[str],
    importances: Mapping[str, float],
    plots: Mapping[str, Path],
) -> str:
    """The summary: the jobs' table, the links to the plots, the importances."""
    objective, splits = jobs[0]["objective"], sorted({job["split"] for job in jobs})
    order = "smallest" if jobs[0]["minimize"] else "largest"
    shared = [f"{k}={jobs[0]['overrides'][k]}" for k in keys if k not in varying]
    mixed = len(splits) > 1
    column = [objective, "split"] if mixed else [f"{objective} ({splits[0]})"]
    header = ["job", *varying, *column, "epochs", "train_seconds"]
    lines = [
        "# Sweep summary",
        "",
        f"{len(jobs)} complete jobs, best first ({order} {objective}).",
        f"Overrides of every job: `{' '.join(shared) or '(none)'}`",
        "",
    ]
    if mixed:
        lines += [f"The jobs measured {objective} on different splits ({', '.join(splits)}): "
                  "only values of the same split compare.", ""]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        cells = [job["job"], *(job["overrides"].get(k, "-") for k in varying), _cell(job["value"])]
        cells += [job["split"]] * mixed + [_cell(job["epochs"]), _cell(job["train_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    parameter_plots = [f"![{key}]({plots[key].name})" for key in varying if key in plots]
    if parameter_plots:
        lines += ["", "## Objective against each parameter", "", "\n\n".join(parameter_plots)]
    if importances:
        lines += ["", "## Parameter importances", "",
                  "Optuna's parameter importances, largest first.", "",
                  "| parameter | importance |", "|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v:.3g} |" for k, v in _descending(importances)]
        if IMPORTANCE_PLOT in plots:
            lines += ["", f"![parameter importances]({IMPORTANCE_PLOT})"]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _finite(job: Mapping[str, Any]) -> bool:
    return job["value"] is not None and math.isfinite(job["value"])


def _descending(importances: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(importances.items(), key=lambda item: -item[1])


# ------------------------------------------------------------------------------ plots
def _write_plots(
    sweep_dir: Path,
    jobs: list[dict[str, Any]],
    varying: list[str],
    importances: Mapping[str, float] | None,
) -> dict[str, Path]:
    """The objective against each parameter in `varying` (jobs with a finite objective) and the
    importances' bar chart; ``{parameter or IMPORTANCE_PLOT: path}`` of the files written."""
    scored = [job for job in jobs if _finite(job)]
    best = scored[0] if scored else None
    splits = sorted({job["split"] for job in scored})
    label = f"{jobs[0]['objective']} ({', '.join(splits)})"
    written = {}
    for key in varying:
        points = [(job["overrides"][key], job) for job in scored if key in job["overrides"]]
        if points:
            fig = new_figure()
            _plot_objective(fig, key, points, best, label)
            written[key] = save_png(fig, sweep_dir / objective_plot_name(key))
    if importances:
        fig = new_figure()
        _plot_importances(fig, importances)
        written[IMPORTANCE_PLOT] = save_png(fig, sweep_dir / IMPORTANCE_PLOT)
    return written


def _plot_objective(
    fig: Any,
    key: str,
    points: list[tuple[str, dict[str, Any]]],
    best: Mapping[str, Any] | None,
    label: str,
) -> None:
    """One dot per job at (its value of `key`, its objective); the best job a red star."""
    scale = parameter_scale([value for value, _ in points])
    ax = fig.add_subplot()
    if scale == "category":
        categories = sorted({value for value, _ in points})
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
        position = {value: float(i) for i, value in enumerate(categories)}
    else:
        position = {value: float(value) for value, _ in points}
        ax.set_xscale(scale)
    ax.plot([position[v] for v, _ in points], [job["value"] for _, job in points], "o", alpha=0.7)
    for value, job in points:
        if job is best:
            ax.plot(position[value], job["value"], "*", color="red", markersize=14,
                    label=f"best (job {job['job']})")  # fmt: skip
            ax.legend()
    ax.set(xlabel=key, ylabel=label, title=f"{label} against {key}")


def _plot_importances(fig: Any, importances: Mapping[str, float]) -> None:
    """Horizontal bars, the most important parameter on top."""
    names, values = zip(*_descending(importances), strict=True)
    ax = fig.add_subplot()
    ax.barh(range(len(names)), values)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="importance", title="Parameter importances (Optuna)")
