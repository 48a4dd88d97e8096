"""implicit's ALS tuned by the protocol our ``hparams_search`` uses, for a like-for-like table.

A comparison of tuned models is fair only when both sides get the same data, the same budget and
the same rules. This module gives `implicit`'s ``AlternatingLeastSquares`` exactly the protocol of
``python scripts/train.py -m hparams_search=... hydra.sweeper.n_trials=N``:

* The data and split are recsys's own: :func:`recsys.pipeline.data.prepare_data` on a config
  composed from ``conf/`` and checked by :func:`recsys.config.validate`, so ``fit`` (train minus
  the per-user validation carve), ``validation``, ``train`` and ``test`` are the very matrices our
  trials and our refit use.
* The study: Optuna's TPE sampler (multivariate, seeded with the config's ``seed``), maximising
  the config's ``eval.objective`` (recall@20) on the validation split, computed by
  :func:`recsys.pipeline.evaluate.evaluate_model` exactly as our trials compute it (the ``fit``
  items excluded, only the objective's metric). The study lives in an SQLite file, so an
  interrupted study continues where it stopped, and its wall time is summed over sessions.
* Epochs by early stopping: implicit's ``fit`` calls back after every iteration; each callback
  evaluates on validation and :class:`recsys.pipeline.callbacks.EarlyStopping` (``eval.patience``)
  stops training; the trial's value is its best epoch's and that epoch count is kept.
* Refit: the best parameters are trained on ``train`` (fit + validation) for the best trial's
  epochs and evaluated on the test split once, with the metrics of a normal run's test
  evaluation.

The search space (:class:`Space`): ``factors`` (int, log scale), ``regularization`` (log) and
``alpha`` (log; implicit multiplies the binary interactions by it, so the confidence of an
observed pair is ``alpha`` and an unobserved one weighs 1), implicit's conjugate-gradient solver as
shipped (``use_cg=True``, 3 steps), ``iterations`` chosen by early stopping. implicit runs with
``num_threads`` threads and its BLAS pool limited to one thread during ``fit``, as in
:mod:`benchmarks.runs`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.pipeline.callbacks import EarlyStopping
from recsys.pipeline.data import Prepared
from recsys.pipeline.evaluate import evaluate_model

REPO = Path(__file__).resolve().parents[1]
STUDY_NAME = "implicit-als"
STUDY_FILE = "study.db"


@dataclass(frozen=True)
class Space:
    """implicit's search space: inclusive bounds, each sampled on a log scale.

    ``factors`` spans what ours searches (16..2048); ``regularization`` is implicit's constant
    lambda (default 0.01) over six decades: on ML-100K (ratings >= 4) a 40-trial study bounded
    at 100 put its best trials at 15..95, so the bound reaches 1000; ``alpha`` the confidence of
    an observed pair (default 1) from 0.1 to 100, which covers the 1..40 usually tried on
    binary data.
    """

    factors: tuple[int, int] = (16, 2048)
    regularization: tuple[float, float] = (1e-3, 1e3)
    alpha: tuple[float, float] = (0.1, 100.0)

    def sample(self, trial: Any) -> dict[str, Any]:
        """The parameters of one Optuna trial."""
        return {
            "factors": trial.suggest_int("factors", *self.factors, log=True),
            "regularization": trial.suggest_float("regularization", *self.regularization, log=True),
            "alpha": trial.suggest_float("alpha", *self.alpha, log=True),
        }


@dataclass(frozen=True)
class Protocol:
    """The budget and rules of a study (what a continued study must share with its start)."""

    trials: int = 40
    max_epochs: int = 50
    threads: int = 2
    space: Space = Space()


def compose_config(overrides: Sequence[str]) -> Any:
    """The validated :class:`recsys.config.TrainConfig` that ``scripts/train.py`` would run with
    `overrides` (composed from the repository's ``conf/``)."""
    from hydra import compose, initialize_config_dir

    from recsys.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


_NO_RATINGS = SimpleNamespace(uses_global_mean=False)


@dataclass
class Factors:
    """implicit's factors under the names :func:`evaluate_model` reads (no biases, no ratings)."""

    user_factors: np.ndarray
    item_factors: np.ndarray

    @property
    def weighting(self) -> Any:
        """Read as ``model.weighting.uses_global_mean``: implicit predicts no ratings."""
        return _NO_RATINGS

    def user_embeddings(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users]

    def item_embeddings(self) -> np.ndarray:
        return self.item_factors

    def user_offsets(self, users: np.ndarray) -> None:
        return None


class _Stop(Exception):
    """Raised from implicit's fit callback to stop training (implicit ignores return values)."""


def fit_implicit(
    matrix: sp.spmatrix,
    params: Mapping[str, Any],
    iterations: int,
    *,
    threads: int,
    seed: int,
    after_epoch: Callable[[int, Factors], bool] | None = None,
) -> Factors:
    """implicit's CPU ALS (CG) fitted on `matrix` (users x items) with `params`.

    ``after_epoch(epoch, factors)`` runs after every iteration (epochs count from 1); True stops
    training. The returned factors are those of the last epoch trained.
    """
    import implicit.cpu.als
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=int(params["factors"]),
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
            use_cg=True,
            iterations=iterations,
            num_threads=threads,
            random_state=seed,
        )

        def callback(iteration: int, elapsed: float, loss: Any) -> None:
            factors = Factors(model.user_factors, model.item_factors)
            if after_epoch is not None and after_epoch(iteration + 1, factors):
                raise _Stop

        with contextlib.suppress(_Stop):
            model.fit(
                sp.csr_matrix(matrix, dtype=np.float32), show_progress=False, callback=callback
            )
    return Factors(model.user_factors, model.item_factors)


def run_trial(
    conf: Any, data: Prepared, params: Mapping[str, Any], protocol: Protocol
) -> tuple[float, int, list[dict[str, Any]]]:
    """``(best validation objective, its epoch, evaluations)`` of `params` trained on ``fit``
    with early stopping on ``validation``, as our trials do."""
    stopper = EarlyStopping(patience=conf.eval.patience)
    objective = conf.eval.objective

    def after_epoch(epoch: int, factors: Factors) -> bool:
        metrics = evaluate_model(
            factors, conf, data.fit.matrix, data.validation.matrix,
            max_users=conf.eval.max_users, seed=conf.seed, objective_only=True,
        )  # fmt: skip
        stopper.update(epoch, metrics.get(objective, float("nan")), metrics)
        return stopper.should_stop

    fit_implicit(
        data.fit.matrix, params, protocol.max_epochs, threads=protocol.threads,
        seed=conf.seed, after_epoch=after_epoch,
    )  # fmt: skip
    if stopper.best_epoch is None:
        raise ValueError(f"no finite {objective} on validation for {dict(params)}")
    return float(stopper.best_value), int(stopper.best_epoch), stopper.evaluations


def _settings(conf: Any, protocol: Protocol, dataset: str) -> dict[str, Any]:
    """What a continued study must match: the data, split, objective and protocol (the budget
    may grow: a continued study with more trials runs the difference)."""
    return {
        "dataset": dataset,
        "data": asdict(conf.data),
        "split": asdict(conf.split),
        "seed": conf.seed,
        "objective": conf.eval.objective,
        "patience": conf.eval.patience,
        "protocol": {k: v for k, v in asdict(protocol).items() if k != "trials"},
    }


def open_study(out: Path, conf: Any, protocol: Protocol, dataset: str) -> Any:
    """The Optuna study in ``out/study.db`` (created, or loaded to continue when it holds the same
    settings; a ValueError names what differs otherwise)."""
    import json

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps(_settings(conf, protocol, dataset)))
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{out / STUDY_FILE}",
        sampler=optuna.samplers.TPESampler(seed=conf.seed, multivariate=True),
        direction="maximize",
        load_if_exists=True,
    )
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        differ = sorted(k for k in settings if stored.get(k) != settings[k])
        raise ValueError(
            f"{out / STUDY_FILE} holds a study with other settings ({', '.join(differ)}); "
            "give another --out or the same settings"
        )
    return study


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.trials if t.state in done]


def tune(
    study: Any,
    conf: Any,
    data: Prepared,
    protocol: Protocol,
    *,
    log: Callable[[str], None] = print,
) -> float:
    """Run the trials the study still lacks (every finished trial counts, failed ones too, as in
    our sweeper; one a killed process left running does not); returns the study's wall
    seconds, summed over every session that worked on it."""
    started = time.perf_counter()
    before = float(study.user_attrs.get("study_seconds", 0.0))

    def objective(trial: Any) -> float:
        params = protocol.space.sample(trial)
        value, epoch, evaluations = run_trial(conf, data, params, protocol)
        trial.set_user_attr("epochs", epoch)
        trial.set_user_attr("evaluations", evaluations)
        log(f"trial {trial.number}: {params} -> {conf.eval.objective} {value:.4f} @ {epoch}")
        return value

    def save_seconds(study: Any, trial: Any) -> None:
        study.set_user_attr("study_seconds", before + time.perf_counter() - started)

    remaining = protocol.trials - len(_finished(study))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, callbacks=[save_seconds], catch=(ValueError,))
    return float(study.user_attrs.get("study_seconds", before))


def refit_and_test(
    conf: Any, data: Prepared, params: Mapping[str, Any], epochs: int, protocol: Protocol
) -> tuple[dict[str, float], float]:
    """``(test metrics, refit seconds)``: `params` trained on the whole training split for
    `epochs`, then evaluated once on the test split like a run's test evaluation."""
    started = time.perf_counter()
    factors = fit_implicit(
        data.train.matrix, params, epochs, threads=protocol.threads, seed=conf.seed
    )
    seconds = time.perf_counter() - started
    return evaluate_model(factors, conf, data.train.matrix, data.test.matrix), seconds


def study_result(
    study: Any, conf: Any, data: Prepared, protocol: Protocol, study_seconds: float
) -> dict[str, Any]:
    """The implicit side of the table: the best trial, its refit and its test metrics."""
    best = study.best_trial
    epochs = int(best.user_attrs["epochs"])
    test, refit_seconds = refit_and_test(conf, data, best.params, epochs, protocol)
    return {
        "library": "implicit",
        "trials": len(_finished(study)),
        "study_seconds": study_seconds,
        "best_params": dict(best.params),
        "epochs": epochs,
        "validation": {conf.eval.objective: float(best.value)},
        "refit_seconds": refit_seconds,
        "test": test,
    }


#: ``--data`` names -> the overrides that make ``scripts/train.py`` load that dataset and its
#: split (``{root}`` is the data folder); the split's validation carve is ``split.validation``.
DATASETS: dict[str, list[str]] = {
    "gowalla": ["data=lightgcn", "data.path={root}/gowalla", "split=given"],
    "ml100k": [
        "data=movielens",
        "data.path={root}/ml-100k",
        "data.variant=100k",
        "data.train_file=u1.base",
        "data.test_file=u1.test",
        "data.binarize=4.0",
        "split=given",
    ],
    "tiny": ["data=synthetic", "data.preset=tiny", "split=random"],
}


def dataset_overrides(name: str, root: Path, *, seed: int = 0, patience: int = 2) -> list[str]:
    """The config overrides of dataset `name` under `root`, with the protocol's validation carve
    (0.1), `seed` and early-stopping `patience`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    data = [o.format(root=root) for o in DATASETS[name]]
    return [*data, "split.validation=0.1", f"seed={seed}", f"eval.patience={patience}"]


#: test metrics of the table, in its column order
TABLE_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def _count(value: Any) -> int | None:
    """A trial count: a number, or a mapping of counts by trial state (summed)."""
    if isinstance(value, Mapping):
        return int(sum(value.values()))
    return None if value is None else int(value)


def ours_result(run_dir: Path) -> dict[str, Any]:
    """Our refit run's side of the table: ``metrics.json`` (test metrics) and ``metadata.json``'s
    ``protocol`` record (trials, study seconds, best parameters, epochs, where it has them)."""
    import json

    metrics_file, metadata_file = run_dir / "metrics.json", run_dir / "metadata.json"
    for path in (metrics_file, metadata_file):
        if not path.is_file():
            raise ValueError(f"--ours {run_dir}: no {path.name}; give a finished refit run folder")
    metrics = json.loads(metrics_file.read_text())
    protocol = json.loads(metadata_file.read_text()).get("protocol") or {}
    return {
        "library": "ours",
        "run_dir": str(run_dir),
        "trials": _count(protocol.get("n_trials", protocol.get("trials"))),
        "study_seconds": protocol.get("study_seconds"),
        "best_params": protocol.get("best_params"),
        "epochs": protocol.get("best_epoch", protocol.get("epochs")),
        "test": {k: v for k, v in metrics.items() if k in TABLE_METRICS},
        "protocol": protocol,
    }


def _params_text(params: Mapping[str, Any] | None) -> str:
    if not params:
        return "-"
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def results_table(implicit: Mapping[str, Any], ours: Mapping[str, Any] | None = None) -> str:
    """The markdown table: one row per library, and the ours / implicit ratios with `ours`."""
    from benchmarks.tables import markdown_table

    headers = ["library", "trials", "study s", "best parameters", "epochs"]
    headers += [f"test {m}" for m in TABLE_METRICS]
    sides = [implicit] if ours is None else [ours, implicit]
    rows: list[list[Any]] = [
        [s["library"], s["trials"], s["study_seconds"], _params_text(s["best_params"]), s["epochs"]]
        + [s["test"].get(m) for m in TABLE_METRICS]
        for s in sides
    ]
    if ours is not None:

        def ratio(a: Any, b: Any) -> float | None:
            return None if a is None or not b else float(a) / float(b)

        rows.append(
            ["ours / implicit", "", ratio(ours["study_seconds"], implicit["study_seconds"]), "", ""]
            + [ratio(ours["test"].get(m), implicit["test"].get(m)) for m in TABLE_METRICS]
        )
    return markdown_table(headers, rows)
