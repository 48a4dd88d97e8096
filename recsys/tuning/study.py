"""Open or continue a study and run its trials, one Hydra job each.

A trial asks Optuna for the swept values, launches one job (``train.py`` with the fixed
overrides plus those values) into the job folder named by the trial's number, reads the job's
``metadata.json`` and tells Optuna the validation objective. A job that failed (an exception, a
run ending with a one-line error, a non-finite objective) is told FAIL and the study goes on,
until ``max_consecutive_failures`` in a row end it. An objective measured on any split but
validation ends the study at once: a search tuned on the test split would report a test
value that the selection has already inflated.

The study lives in ``storage`` (SQLite in the sweep folder by default): rerunning the same
command with the same ``hydra.sweep.dir`` continues it until it holds ``n_trials`` finished
trials. Trials a killed session left running are marked FAIL (and listed in the study's
``interrupted_trials`` attribute, outside the count) and their values are tried again first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from recsys.config import MINIMIZE
from recsys.pipeline.artifacts import METADATA_FILE, METRICS_FILE, read_json
from recsys.tuning.results import results_record, write_results, write_summary
from recsys.tuning.space import SpaceError, override_value, search_space

__all__ = ["StudyError", "StudySettings", "TrialOutcome", "read_trial", "run_study"]

logger = logging.getLogger("recsys.tuning")

#: the exit status of ``scripts/train.py`` interrupted by Ctrl-C: the study stops there
INTERRUPTED = 130


class StudyError(RuntimeError):
    """A study that cannot start or go on; the message is one line naming the key and the fix."""


@dataclass
class StudySettings:
    """``hydra.sweeper`` (see ``hydra_plugins.recsys_optuna_sweeper``)."""

    n_trials: int = 20
    direction: str = "auto"
    study_name: str = "recsys"
    storage: str | None = None
    sampler: str = "tpe"
    seed: int = 0
    params: dict[str, str] = field(default_factory=dict)
    max_consecutive_failures: int = 3


@dataclass
class TrialOutcome:
    """What one trial's job left: its folder and, when it completed, its validation objective,
    best epoch and validation metrics."""

    job: Path
    value: float | None = None
    best_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def read_trial(job: Path, value: Any) -> TrialOutcome:
    """The outcome of the completed job in `job` that returned `value`; StudyError when its
    objective was not measured on the validation split (a run that evaluated the test split)."""
    meta = read_json(job / METADATA_FILE)
    split = meta["objective"].get("split", "test")
    if split != "validation":
        raise StudyError(
            f"hparams_search trials must be tuned on validation data: set eval.test=false (and "
            f"split.validation > 0); the job in {job} reported its {meta['objective']['name']} "
            f"on the {split} split"
        )
    metrics = read_json(job / METRICS_FILE)
    epoch = meta["best_epoch"] if meta.get("best_epoch") is not None else meta["epochs"]
    validation = {k: float(v) for k, v in metrics.items() if k.startswith("validation_")}
    return TrialOutcome(job, float(value), int(epoch), validation)


def direction_of(direction: str, objective: str) -> str:
    """``minimize`` or ``maximize``; ``auto`` follows the objective (rmse, mae, ... minimise)."""
    if direction == "auto":
        return "minimize" if objective in MINIMIZE else "maximize"
    if direction not in ("minimize", "maximize"):
        raise StudyError(f"hydra.sweeper.direction={direction}: must be auto, minimize or maximize")
    return direction


def make_sampler(name: str, seed: int) -> Any:
    """The sampler `name` seeded by `seed`.

    ``tpe`` is multivariate: the ALS settings interact (at reg_exponent 1 the effective iALS
    penalty is about regularization * alpha0 * n_items, so the best regularization moves with
    alpha0 and the factor count), and multivariate TPE models the good region jointly where
    independent TPE draws each key from its own marginal. ``random`` samples uniformly (on the
    log scale where tagged).
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise StudyError(f"hydra.sweeper.sampler={name}: must be tpe or random")


def check_trial_mode(config: Any) -> None:
    """StudyError unless the jobs are tuning trials (``eval.test=false``)."""
    if config.eval.get("test", True):
        raise StudyError(
            "hparams_search trials must be tuned on validation data: set eval.test=false (the "
            "hparams_search=<name> options do), never tune on the test split"
        )


def open_study(settings: StudySettings, direction: str) -> Any:
    """Create the study in ``settings.storage``, or load it when it exists. The sampler's seed
    is offset by the trials already in the study, so a continued study does not draw the
    values of its first session's trials again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=settings.study_name, storage=settings.storage,
            direction=direction, load_if_exists=True,
        )  # fmt: skip
    except ValueError as err:  # e.g. a stored study with the other direction
        raise StudyError(f"hydra.sweeper.storage={settings.storage}: {err}") from None
    study.sampler = make_sampler(settings.sampler, settings.seed + len(study.trials))
    return study


def recover_interrupted(study: Any) -> None:
    """Mark the trials a killed session left RUNNING as FAIL, list them in the study's
    ``interrupted_trials`` attribute and enqueue their values, to be tried first."""
    from optuna.trial import TrialState

    interrupted = list(study.user_attrs.get("interrupted_trials", []))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        logger.warning("trial %d was interrupted; its values are tried again", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)
        interrupted.append(trial.number)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    study.set_user_attr("interrupted_trials", interrupted)


def trial_counts(study: Any) -> dict[str, int]:
    """The study's trials by state; ``fail`` excludes the interrupted ones (counted apart)."""
    from optuna.trial import TrialState

    interrupted = len(study.user_attrs.get("interrupted_trials", []))
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "fail": states.count(TrialState.FAIL) - interrupted,
        "interrupted": interrupted,
    }


def finished(counts: dict[str, int]) -> int:
    """The finished trials :func:`run_study` counts against ``n_trials``."""
    return counts["complete"] + counts["pruned"] + counts["fail"]


def launch_trial(launcher: Any, overrides: list[str], number: int, sweep_dir: Path) -> TrialOutcome:
    """Run one job (folder ``<sweep_dir>/<number>``) and read its outcome; ``value`` None when
    it failed. Ctrl-C (exit status 130) propagates: the trial stays RUNNING for a continue."""
    from hydra.core.utils import JobStatus

    try:
        (ret,) = launcher.launch([overrides], initial_job_idx=number)
    except SystemExit as exit_:  # scripts/train.py ends a failed run with a one-line error
        if exit_.code == INTERRUPTED:
            raise
        return TrialOutcome(sweep_dir / str(number))
    job = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    if ret.status != JobStatus.COMPLETED:
        try:
            ret.return_value  # noqa: B018 (raises the job's exception)
        except Exception as err:  # any error of a trial fails that trial only
            logger.warning("trial %d failed in %s: %s", number, job, err)
        return TrialOutcome(job)
    return read_trial(job, ret.return_value)


def _tell(study: Any, trial: Any, outcome: TrialOutcome) -> bool:
    """Tell `study` how `trial` ended (its job folder, best epoch and validation metrics as
    user attributes); whether it completed with a finite objective."""
    from optuna.trial import TrialState

    trial.set_user_attr("job", str(outcome.job))
    if outcome.value is None or not math.isfinite(outcome.value):
        study.tell(trial, state=TrialState.FAIL)
        return False
    trial.set_user_attr("best_epoch", outcome.best_epoch)
    trial.set_user_attr("metrics", outcome.metrics)
    study.tell(trial, outcome.value)
    return True


def _space(settings: StudySettings, arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """:func:`search_space` of the settings and the command line, as StudyError."""
    try:
        space, fixed = search_space(settings.params, arguments)
    except SpaceError as err:
        raise StudyError(f"hydra.sweeper.params: {err}") from None
    if not space:
        raise StudyError(
            "hydra.sweeper.params: nothing to search; give key=interval(...) / choice(...) "
            "expressions there or on the command line"
        )
    return space, fixed


def run_study(settings: StudySettings, config: Any, launcher: Any, arguments: Sequence[str]) -> Any:
    """Run (or continue) the study until it holds ``settings.n_trials`` finished trials and
    return it; ``optimization_results.yaml`` and ``summary.md`` are rewritten after each."""
    from optuna.trial import TrialState

    check_trial_mode(config)
    space, fixed = _space(settings, arguments)
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
    objective = str(config.eval.objective)
    study = open_study(settings, direction_of(settings.direction, objective))
    recover_interrupted(study)
    sessions = [*study.user_attrs.get("session_seconds", []), 0.0]
    started, failures = time.perf_counter(), 0
    while finished(trial_counts(study)) < settings.n_trials:
        trial = study.ask(space)
        values = [f"{key}={override_value(trial.params[key])}" for key in space]
        try:
            outcome = launch_trial(launcher, [*fixed, *values], trial.number, sweep_dir)
        except StudyError:
            study.tell(trial, state=TrialState.FAIL)
            raise
        failures = 0 if _tell(study, trial, outcome) else failures + 1
        sessions[-1] = time.perf_counter() - started
        study.set_user_attr("session_seconds", sessions)
        record = results_record(
            study, storage=settings.storage, objective=objective, swept=list(space),
            fixed=fixed, counts=trial_counts(study), seconds=sum(sessions),
        )  # fmt: skip
        write_results(sweep_dir, record)
        write_summary(sweep_dir, study)
        if failures >= settings.max_consecutive_failures:
            raise StudyError(
                f"{failures} trials failed in a row (the last in {outcome.job}); see its "
                "train.log, fix the cause and rerun the command to continue the study"
            )
    return study
