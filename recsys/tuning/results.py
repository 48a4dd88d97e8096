"""``optimization_results.yaml``: where a study stands, rewritten after every trial.

Its keys (``scripts/refit.py`` reads them): ``name`` (``optuna``), ``study_name``, ``storage``,
``direction``, ``objective`` (``{name, split: validation}``), ``best_params`` (the swept keys
as override values: ``key=value`` on a command line trains the best trial's model again),
``best_value``, ``best_trial``, ``best_job`` (its job folder), ``best_epoch`` (the epochs its
early stopping kept, or the fixed epoch count without early stopping), ``best_metrics`` (its
validation metrics), ``n_trials`` (by state), ``study_seconds`` (wall time over every session
of the study) and ``fixed_overrides`` (the command line's overrides that are not swept).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.io import atomic_path
from recsys.tuning.space import override_value

__all__ = ["RESULTS_FILE", "results_record", "write_results", "write_summary"]

RESULTS_FILE = "optimization_results.yaml"


def results_record(
    study: Any,
    *,
    storage: str | None,
    objective: str,
    swept: Sequence[str],
    fixed: Sequence[str],
    counts: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    """The content of ``optimization_results.yaml`` for `study` (an ``optuna.Study``)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    attrs = best.user_attrs if best is not None else {}
    return {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": storage,
        "direction": study.direction.name.lower(),
        "objective": {"name": objective, "split": "validation"},
        "best_params": None
        if best is None
        else {key: override_value(best.params[key]) for key in swept if key in best.params},
        "best_value": None if best is None else float(best.value),
        "best_trial": None if best is None else best.number,
        "best_job": attrs.get("job"),
        "best_epoch": attrs.get("best_epoch"),
        "best_metrics": attrs.get("metrics"),
        "n_trials": counts,
        "study_seconds": round(seconds, 3),
        "fixed_overrides": list(fixed),
    }


def write_results(sweep_dir: Path, record: dict[str, Any]) -> Path:
    """Write `record` as ``optimization_results.yaml`` into `sweep_dir`, atomically."""
    import yaml

    path = Path(sweep_dir) / RESULTS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    return path


def write_summary(sweep_dir: Path, study: Any) -> Path | None:
    """Rewrite the sweep folder's ``summary.md`` (its complete jobs, best first; see
    :func:`recsys.pipeline.sweep.write_sweep_summary`), with `study`'s parameter importances
    (how much of the objective's variation each swept key explains); its path, or None
    before the first complete job."""
    from recsys.pipeline.sweep import write_sweep_summary
    from recsys.tuning.importance import param_importances

    return write_sweep_summary(Path(sweep_dir), importances=param_importances(study))
