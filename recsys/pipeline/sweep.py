"""The summary of a sweep (``train.py -m``): its finished jobs, best first, in markdown.

Each job folder of the sweep holds ``metadata.json`` (its overrides and objective) and
``metrics.json`` once complete. :func:`write_sweep_summary` reads them and writes
``summary.md`` into the sweep folder: the overrides every job shares, then one row per job with
the overrides that differ between jobs, its objective, epochs and training seconds, sorted by
the objective (smallest first when the objective is minimised). Unfinished jobs are left out,
so rewriting it after every job keeps it current while the sweep runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from recsys.pipeline.artifacts import METADATA_FILE, METRICS_FILE, atomic_write_text, read_json

__all__ = ["SUMMARY_FILE", "sweep_jobs", "write_sweep_summary"]

SUMMARY_FILE = "summary.md"


def sweep_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The complete jobs under `sweep_dir`, best first: ``{"job", "overrides", "objective",
    "value", "minimize", "epochs", "train_seconds"}`` each (a missing value sorts last)."""
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
            "value": objective["value"],
            "minimize": bool(objective["minimize"]),
            "epochs": metrics.get("epochs"),
            "train_seconds": metrics.get("train_seconds"),
        })  # fmt: skip

    def rank(job: dict[str, Any]) -> tuple[bool, float]:
        value = job["value"]
        if value is None or not math.isfinite(value):
            return True, 0.0
        return False, value if job["minimize"] else -value

    return sorted(jobs, key=rank)


def write_sweep_summary(sweep_dir: Path) -> Path | None:
    """Write ``summary.md`` (atomically) into `sweep_dir`; its path, or None without a complete
    job yet."""
    jobs = sweep_jobs(sweep_dir)
    if not jobs:
        return None
    keys = list(dict.fromkeys(k for job in jobs for k in job["overrides"]))
    varying = [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]
    shared = [f"{k}={jobs[0]['overrides'][k]}" for k in keys if k not in varying]
    objective = jobs[0]["objective"]
    order = "smallest" if jobs[0]["minimize"] else "largest"
    header = ["job", *varying, f"{objective} (test)", "epochs", "train_seconds"]
    lines = [
        "# Sweep summary",
        "",
        f"{len(jobs)} complete jobs, best first ({order} {objective}).",
        f"Overrides of every job: `{' '.join(shared) or '(none)'}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for job in jobs:
        cells = [job["job"], *(job["overrides"].get(k, "-") for k in varying)]
        cells += [_cell(job["value"]), _cell(job["epochs"]), _cell(job["train_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return atomic_write_text(Path(sweep_dir) / SUMMARY_FILE, "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)
