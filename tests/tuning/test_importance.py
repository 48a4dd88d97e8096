"""Optuna's parameter importances of a study, or None when there is nothing to compare."""

from __future__ import annotations

import pytest

from recsys.tuning.importance import param_importances

optuna = pytest.importorskip("optuna")


def _study(n_trials: int, objective) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=n_trials)
    return study


def _x_only(trial: optuna.Trial) -> float:
    x, _ = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
    return (x - 0.2) ** 2


def test_the_parameter_the_objective_depends_on_matters_most() -> None:
    importances = param_importances(_study(12, _x_only))
    assert set(importances) == {"x", "y"}
    assert importances["x"] > importances["y"]
    assert sum(importances.values()) == pytest.approx(1.0)


def test_none_with_fewer_than_two_complete_trials() -> None:
    assert param_importances(_study(0, _x_only)) is None
    assert param_importances(_study(1, _x_only)) is None

    def failing(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        raise optuna.TrialPruned

    assert param_importances(_study(3, failing)) is None  # pruned trials are not complete


def test_none_when_no_parameter_varied() -> None:
    def constant(trial: optuna.Trial) -> float:
        return trial.suggest_int("n_factors", 8, 8) + trial.suggest_categorical("cg", [True])

    assert param_importances(_study(5, constant)) is None
