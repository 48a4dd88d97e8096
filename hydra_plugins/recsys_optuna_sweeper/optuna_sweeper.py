"""The Optuna sweeper of ``scripts/train.py -m`` (``hydra/sweeper=optuna``, which every
``hparams_search=<name>`` option selects).

Hydra imports every module under ``hydra_plugins`` at each start, so this one stays thin: its
config schema and a class handing the sweep to :func:`recsys.tuning.study.run_study`, which
imports Optuna only when a study runs. The published ``hydra-optuna-sweeper`` (1.3) pins
``optuna<3`` (and with it SQLAlchemy 1.x); this one runs on current Optuna and speaks the same
search-space grammar (``interval``, ``tag(log, ...)``, ``int(...)``, ``choice``, ``range``).
"""

# no `from __future__ import annotations`: Hydra executes this module before it is in
# sys.modules, where dataclasses look string annotations up
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class RecsysOptunaSweeperConf:
    """``hydra.sweeper`` of ``hydra/sweeper=optuna``.

    ``n_trials``: finished trials the study holds when it ends (a continued study runs the
    rest). ``direction``: ``auto`` (minimise rmse / mae and the other metrics where smaller is
    better, maximise the rest), ``minimize`` or ``maximize``. ``storage``: an Optuna storage URL
    (default ``study.db`` in the sweep folder, so rerunning the command with the same
    ``hydra.sweep.dir`` continues the study; null: in memory). ``sampler``: ``tpe``
    (multivariate) or ``random``, seeded by ``seed``. ``params``: key -> search expression in
    Hydra's override grammar, e.g. ``tag(log, interval(1e-4, 1e-1))``.
    ``max_consecutive_failures``: failed trials in a row that end the study.
    """

    _target_: str = "hydra_plugins.recsys_optuna_sweeper.optuna_sweeper.RecsysOptunaSweeper"
    n_trials: int = 20
    direction: str = "auto"
    study_name: str = "recsys"
    storage: str | None = "sqlite:///${hydra.sweep.dir}/study.db"
    sampler: str = "tpe"
    seed: int = 0
    params: dict[str, str] = field(default_factory=dict)
    max_consecutive_failures: int = 3


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=RecsysOptunaSweeperConf, provider="recsys"
)


class RecsysOptunaSweeper(Sweeper):
    """Runs an Optuna study: one Hydra job per trial, one at a time (see
    :func:`recsys.tuning.study.run_study`)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Run the study; a study that cannot go on ends the process with a one-line error
        (exit status 2), as ``scripts/train.py`` does for a bad config."""
        import sys

        from recsys.tuning.study import StudyError, StudySettings, run_study

        params = self.settings.get("params") or {}
        settings = {**self.settings, "params": {str(k): str(v) for k, v in params.items()}}
        try:
            study = run_study(StudySettings(**settings), self.config, self.launcher, arguments)
        except StudyError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        folder = self.config.hydra.sweep.dir
        print(
            f"[recsys] study done: {folder}/optimization_results.yaml; train the best trial on "
            f"train + validation and test it once: python scripts/refit.py sweep={folder}"
        )
        return study
