"""The fit stage: train ALS epoch by epoch, then optionally refit or sample the posterior.

Training runs one epoch at a time with the callbacks of :mod:`recsys.pipeline.callbacks`:
TensorBoard scalars and histograms, a progress bar, an evaluation on the validation split every
``eval.every`` epochs, early stopping after ``eval.patience`` evaluations without improvement (the
best epoch's factors are kept), an atomic checkpoint every ``checkpoint.every`` epochs. Then,
optionally, a refit on the whole training split for the best number of epochs (``eval.refit``)
and posterior sampling (``als.posterior_samples``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recsys.als import ALS
from recsys.config import ConfigError, TrainConfig, to_dict
from recsys.pipeline.callbacks import (
    Checkpointing,
    EarlyStopping,
    EpochCallback,
    EpochHook,
    Progress,
    TrackEpoch,
    UserHook,
    Validation,
    compose,
    restore,
    snapshot,
)
from recsys.pipeline.checkpoints import Checkpointer
from recsys.pipeline.data import Prepared
from recsys.pipeline.evaluate import evaluate_model
from recsys.pipeline.job import Job
from recsys.pipeline.tracking import Tracker

__all__ = ["Fitted", "Start", "als_kwargs", "check_device", "fit", "start_from"]


def check_device(cfg: TrainConfig) -> None:
    """ConfigError naming ``als.device`` when this machine cannot run it (``cuda`` without
    CUDA), before any data is loaded."""
    from recsys.als.model import resolve_device

    try:
        resolve_device(cfg.als.device)
    except ValueError as err:
        raise ConfigError(f"als.device={cfg.als.device}: {err}") from None


def als_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """`ALS` arguments from ``cfg.als`` (how to run it, ``als.distributed*`` and
    ``als.posterior_*``, is not among them); in a distributed run on CUDA each rank uses its own
    GPU (``cuda:LOCAL_RANK``)."""
    kwargs = cfg.als.model_kwargs()
    if cfg.als.distributed and torch.distributed.is_initialized():
        from recsys.als.distributed import local_device
        from recsys.als.model import resolve_device

        kwargs["device"] = str(local_device(resolve_device(kwargs["device"])))
    return kwargs


@dataclass
class Start:
    """Where training starts: a new model, or a checkpoint's model and early-stopping state."""

    model: Any
    stopper: EarlyStopping
    resumed_from: int | None  # the checkpoint's epoch; None for a new run
    elapsed_before: float  # training seconds spent before the checkpoint
    overrides: list[str]  # the command-line overrides of the run's first command


def start_from(
    job: Job,
    loaded: tuple[Any, Any | None, dict[str, Any]] | None,
    overrides: Sequence[str] | None,
) -> Start:
    """A new model from the config, or the checkpoint `loaded` (``Checkpointer.load``)."""
    conf = job.conf
    stopper = EarlyStopping(conf.eval.patience, minimize=conf.eval.minimize)
    if loaded is None:
        return Start(ALS(**als_kwargs(conf)), stopper, None, 0.0, list(overrides or []))
    model, stopper.best_model, state = loaded
    stopper.restore(state["early_stopping"])
    resumed_from = len(model.history)
    if stopper.best_model is None and stopper.best_epoch == resumed_from:
        stopper.best_model = snapshot(model)  # the checkpoint's own factors are the best
    job.info("resuming %s from epoch %d", job.out, resumed_from)
    elapsed = float(state.get("train_seconds", 0.0))
    return Start(model, stopper, resumed_from, elapsed, list(state.get("overrides") or []))


@dataclass
class Fitted:
    """The trained model and how it got there."""

    model: Any
    history: list[dict[str, Any]]  # every epoch run, also those after the best one
    refit_history: list[dict[str, Any]] | None
    posterior_history: list[dict[str, Any]] | None
    train_seconds: float  # wall-clock, from the first epoch (before a resume too) to the end

    @property
    def epoch_seconds(self) -> float:
        """The ALS epochs alone (no validation, checkpoints or data loading), refit and
        posterior sweeps included."""
        phases = self.history + (self.refit_history or []) + (self.posterior_history or [])
        return sum(h.get("seconds", 0.0) for h in phases)


def fit(
    job: Job,
    data: Prepared,
    start: Start,
    *,
    tracker: Tracker,
    checkpointer: Checkpointer,
    epoch_hook: EpochHook | None = None,
) -> Fitted:
    """Train `start.model` on ``data.fit`` (keeping the best evaluated epoch), then refit or
    sample the posterior when the config asks for it."""
    from tqdm.auto import tqdm

    conf = job.conf
    bar = tqdm(
        total=conf.als.iterations,
        initial=start.resumed_from or 0,
        desc="ALS",
        unit="epoch",
        disable=not (conf.progress and job.primary),
        dynamic_ncols=True,
    )
    fit_start = time.perf_counter()

    def seconds() -> float:
        return start.elapsed_before + time.perf_counter() - fit_start

    callbacks = _epoch_callbacks(job, data, start, tracker, checkpointer, bar, seconds)
    if epoch_hook is not None:
        callbacks.append(UserHook(epoch_hook))
    model = start.model
    resume = start.resumed_from is not None
    model.fit(data.fit, callback=compose(callbacks), resume=resume, distributed=job.distributed)
    bar.close()
    history = _keep_best(model, start.stopper)
    _log_early_stop(job, start.stopper, len(history))
    model, refit_history, posterior_history = _refit_or_sample(
        job, data, model, start.stopper, tracker
    )
    return Fitted(model, history, refit_history, posterior_history, seconds())


def _keep_best(model: Any, stopper: EarlyStopping) -> list[dict[str, Any]]:
    """The history of every epoch run; `model` goes back to the best evaluated epoch (its
    factors and its history) when there is one."""
    history = [dict(h) for h in model.history]
    if stopper.best_model is not None and stopper.best_epoch is not None:
        if stopper.best_epoch != len(history):
            restore(model, stopper.best_model)
        model.history = history[: stopper.best_epoch]
    return history


def _log_early_stop(job: Job, stopper: EarlyStopping, epochs_run: int) -> None:
    """One line when early stopping ended training: when, and which epoch was kept."""
    conf = job.conf
    if stopper.fired(epochs_run, conf.als.iterations):
        job.info(
            "early stopping: %s did not improve for %d evaluations; stopped after epoch %d of "
            "%d and kept epoch %s (validation %s = %s)",
            conf.eval.objective, stopper.bad_evaluations, epochs_run, conf.als.iterations,
            stopper.best_epoch, conf.eval.objective, stopper.best_value,
        )  # fmt: skip


def _epoch_callbacks(
    job: Job,
    data: Prepared,
    start: Start,
    tracker: Tracker,
    checkpointer: Checkpointer,
    bar: Any,
    seconds: Callable[[], float],
) -> list[EpochCallback]:
    """Tracking, validation with early stopping, progress and checkpoints, in this order; none
    on the ranks > 0 (rank 0 evaluates, checkpoints and decides when to stop)."""
    if not job.primary:
        return []
    conf = job.conf
    callbacks: list[EpochCallback] = [TrackEpoch(tracker)]
    if data.validation is not None and conf.eval.every > 0:
        validation = data.validation.matrix

        def evaluate(model: Any) -> dict[str, float]:
            return evaluate_model(
                model, conf, data.fit.matrix, validation,
                max_users=conf.eval.max_users, seed=conf.seed, objective_only=True,
            )  # fmt: skip

        stopper = start.stopper
        callbacks.append(
            Validation(evaluate, conf.eval.every, conf.eval.objective, stopper, tracker)
        )

    def run_state() -> dict[str, Any]:
        return {"train_seconds": seconds(), "config": to_dict(conf), "overrides": start.overrides}

    every, last = conf.checkpoint.every, conf.als.iterations
    callbacks.append(Progress(bar))
    callbacks.append(Checkpointing(checkpointer, every, last, start.stopper, run_state))
    return callbacks


def _refit_or_sample(
    job: Job, data: Prepared, model: Any, stopper: EarlyStopping, tracker: Tracker
) -> tuple[Any, list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """``(model, refit_history, posterior_history)``: the refitted model (``eval.refit``) or
    `model`, then its posterior average (``als.posterior_samples``); None for what did not run."""
    refit_history = None
    refitted = _refit(job, data, stopper, tracker)
    if refitted is not None:
        model, refit_history = refitted
    posterior_history = None
    if job.conf.als.posterior_samples:  # single process (checked by the config)
        fitted_on = data.train if refitted is not None else data.fit
        posterior_history = _sample_posterior(job, model, fitted_on, tracker)
    return model, refit_history, posterior_history


def _refit(
    job: Job, data: Prepared, stopper: EarlyStopping, tracker: Tracker
) -> tuple[Any, list[dict[str, Any]]] | None:
    """With ``eval.refit``: ``(model, history)`` of a new model trained on the whole training
    split for the best evaluated number of epochs (None when nothing was evaluated)."""
    conf = job.conf
    if not conf.eval.refit:
        return None
    epochs = stopper.best_epoch
    if job.comm is not None:  # only rank 0 evaluated
        best_epoch = job.comm.broadcast_float(float(epochs or 0), "broadcast of best epoch")
        epochs = int(best_epoch) or None
    if epochs is None:
        return None
    job.info("refit on the whole training split for %d epochs", epochs)
    model = ALS(**{**als_kwargs(conf), "iterations": epochs})

    def on_refit(epoch: int, loss: float, seconds: float, m: Any) -> None:
        tracker.log_metrics({"loss": loss, "epoch_seconds": seconds}, epoch, "refit")

    model.fit(data.train, callback=on_refit, distributed=job.distributed)
    return model, [dict(h) for h in model.history]


def _sample_posterior(job: Job, model: Any, train: Any, tracker: Tracker) -> list[dict[str, Any]]:
    """Gibbs sweeps from the fitted model (``als.posterior_*``); the history of the sweeps."""
    als = job.conf.als
    job.info(
        "posterior sampling: %d burn-in sweeps, then %d draws averaged",
        als.posterior_burn_in, als.posterior_samples,
    )  # fmt: skip
    model.sample_posterior(
        train, als.posterior_samples, burn_in=als.posterior_burn_in, prior=als.posterior_prior
    )
    history = [h for h in model.history if h.get("phase") == "posterior"]
    for sweep, h in enumerate(history, start=1):
        tracker.log_metrics(
            {"loss": h["loss"], "noise_precision": h["noise_precision"]}, sweep, "posterior"
        )
    return history
