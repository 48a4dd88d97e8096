"""What runs after every training epoch, one small class per job, composed by the fit stage.

``ALS.fit`` calls one function after each epoch; :func:`compose` turns a list of callbacks into
it. Each callback sees the same :class:`EpochEnd` in turn (in list order) and may ask to stop or
add to the progress bar's postfix:

- :class:`TrackEpoch`: TensorBoard scalars (losses, seconds) and factor histograms;
- :class:`Validation`: an evaluation on the validation split every ``eval.every`` epochs,
  :class:`EarlyStopping` on its objective, the best epoch's factors kept;
- :class:`Progress`: the progress bar;
- :class:`Checkpointing`: an atomic checkpoint every ``checkpoint.every`` epochs;
- :class:`UserHook`: the caller's ``epoch_hook`` (tests, notebooks).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from recsys.pipeline.checkpoints import Checkpointer
from recsys.pipeline.tracking import Tracker

__all__ = [
    "Checkpointing",
    "EarlyStopping",
    "EpochCallback",
    "EpochEnd",
    "EpochHook",
    "Progress",
    "TrackEpoch",
    "UserHook",
    "Validation",
    "compose",
    "restore",
    "snapshot",
]

#: Called after every epoch with (epoch, loss, seconds, model); for tests and notebooks.
EpochHook = Callable[[int, float, float, Any], Any]


@dataclass
class EpochEnd:
    """One finished epoch, as the callbacks see it; they may set `stop` and add to `postfix`."""

    epoch: int
    loss: float
    seconds: float
    model: Any
    stop: bool = False
    postfix: dict[str, Any] = field(default_factory=dict)


class EpochCallback(Protocol):
    def on_epoch(self, end: EpochEnd) -> None: ...


def compose(callbacks: Sequence[EpochCallback]) -> Callable[[int, float, float, Any], bool]:
    """The ``ALS.fit`` callback running `callbacks` in order; True (stop) when one said so."""

    def on_epoch(epoch: int, loss: float, seconds: float, model: Any) -> bool:
        end = EpochEnd(epoch, loss, seconds, model)
        for callback in callbacks:
            callback.on_epoch(end)
        return end.stop

    return on_epoch


def snapshot(model: Any) -> Any:
    """A detached copy of a model (factors, biases, history) to keep the best epoch."""
    clone = copy.copy(model)
    for name in model.TENSORS:
        value = getattr(model, name)
        setattr(clone, name, None if value is None else value.detach().clone())
    clone.history = [dict(h) for h in model.history]
    return clone


def restore(model: Any, best: Any) -> None:
    """Put the factors, biases and history of the snapshot `best` back into `model`."""
    for name in model.TENSORS:
        setattr(model, name, getattr(best, name))
    model.global_bias = best.global_bias
    model.history = [dict(h) for h in best.history]


@dataclass
class EarlyStopping:
    """Tracks the best evaluated epoch; `should_stop` after `patience` evaluations without gain.

    `best_model` holds that epoch's factors (a :func:`snapshot`, set by :class:`Validation`);
    it is not part of :meth:`state`, the JSON a checkpoint keeps (its ``best.npz`` holds them).
    """

    patience: int
    minimize: bool = False
    best_value: float | None = None
    best_epoch: int | None = None
    bad_evaluations: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    best_model: Any | None = field(default=None, repr=False, compare=False)

    def update(self, epoch: int, value: float, metrics: Mapping[str, float]) -> bool:
        """Record an evaluation; True when it is the best so far."""
        self.evaluations.append({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        better = self.best_value is None or (
            value < self.best_value if self.minimize else value > self.best_value
        )
        if better and math.isfinite(value):
            self.best_value, self.best_epoch, self.bad_evaluations = float(value), epoch, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evaluations >= self.patience

    def fired(self, epochs_run: int, max_epochs: int) -> bool:
        """Whether early stopping ended training: it says stop before `max_epochs` ran."""
        return self.should_stop and epochs_run < max_epochs

    def state(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_evaluations": self.bad_evaluations,
            "evaluations": list(self.evaluations),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        self.bad_evaluations = int(state.get("bad_evaluations", 0))
        self.evaluations = list(state.get("evaluations", []))


@dataclass
class TrackEpoch:
    """TensorBoard: the epoch's loss terms and seconds, and the factor histograms."""

    tracker: Tracker

    def on_epoch(self, end: EpochEnd) -> None:
        m = end.model
        self.tracker.log_epoch(m.history[-1], end.epoch)
        self.tracker.log_factors(
            end.epoch, m.user_factors, m.item_factors, m.user_bias, m.item_bias
        )


@dataclass
class Validation:
    """Every `every` epochs: `evaluate` the model, log ``validation/<metric>``, update `stopper`
    on `objective` (keeping the best epoch's factors) and stop when it says so."""

    evaluate: Callable[[Any], dict[str, float]]
    every: int
    objective: str
    stopper: EarlyStopping
    tracker: Tracker

    def on_epoch(self, end: EpochEnd) -> None:
        if end.epoch % self.every != 0:
            return
        metrics = self.evaluate(end.model)
        self.tracker.log_metrics(metrics, end.epoch, "validation")
        value = metrics.get(self.objective, float("nan"))
        if self.stopper.update(end.epoch, value, metrics):
            self.stopper.best_model = snapshot(end.model)
        end.postfix[f"val {self.objective}"] = f"{value:.4f}"
        end.stop = self.stopper.should_stop


@dataclass
class Progress:
    """The progress bar: one step per epoch, its seconds, loss and what others added."""

    bar: Any  # tqdm

    def on_epoch(self, end: EpochEnd) -> None:
        postfix: dict[str, Any] = {"s": f"{end.seconds:.2f}"}
        if math.isfinite(end.loss):
            postfix["loss"] = f"{end.loss:.4g}"
        self.bar.set_postfix({**postfix, **end.postfix}, refresh=False)
        self.bar.update(1)


@dataclass
class Checkpointing:
    """Every `every` epochs before `last_epoch`, unless stopping: an atomic checkpoint with the
    model, the best earlier epoch's factors and ``state.json`` (the epoch, `stopper`'s state and
    what `run_state` returns)."""

    checkpointer: Checkpointer
    every: int
    last_epoch: int
    stopper: EarlyStopping
    run_state: Callable[[], dict[str, Any]]

    def on_epoch(self, end: EpochEnd) -> None:
        epoch = end.epoch
        if not self.every or epoch % self.every != 0 or end.stop or epoch >= self.last_epoch:
            return
        best = self.stopper.best_model
        keep_best = best is not None and self.stopper.best_epoch != epoch
        state = {"epoch": epoch, "early_stopping": self.stopper.state(), **self.run_state()}
        self.checkpointer.save(epoch, end.model, best if keep_best else None, state)


@dataclass
class UserHook:
    """The caller's `hook(epoch, loss, seconds, model)`; an exception it raises aborts the run."""

    hook: EpochHook

    def on_epoch(self, end: EpochEnd) -> None:
        self.hook(end.epoch, end.loss, end.seconds, end.model)
