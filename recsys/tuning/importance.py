"""How much each tuned hyperparameter mattered: Optuna's parameter importances of a study.

Optuna's default evaluator (PED-ANOVA in Optuna 5) is kept: it needs no scikit-learn (fANOVA
and the mean-decrease-impurity evaluator fit random forests with it) and it is fast on the few
dozen trials a tuning study runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["param_importances"]


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """``{parameter: importance}`` of `study`'s complete trials (Optuna's
    ``get_param_importances``: normalised to sum to 1, largest first); None with fewer than 2
    complete trials or when no parameter ever took a second value, where there is nothing to
    compare.

    PED-ANOVA does not raise in those cases (it warns and returns equal or zero importances, which
    would read as a finding), hence the checks before calling it.
    """
    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(trials) < 2:
        return None
    values: dict[str, set[object]] = {}
    for trial in trials:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(value)
    if all(len(seen) < 2 for seen in values.values()):
        return None
    return dict(optuna.importance.get_param_importances(study))
