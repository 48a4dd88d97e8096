"""recsys.pipeline.callbacks: the early-stopping state machine, and the epoch callbacks composed
in order (validation decides, the progress bar shows it, a stopping epoch is not checkpointed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse

from recsys import pipeline
from recsys.als import ALS
from recsys.pipeline.callbacks import Checkpointing, Progress, UserHook, Validation, compose
from recsys.pipeline.tracking import Tracker


def test_early_stopping_state_machine() -> None:
    stop = pipeline.EarlyStopping(patience=2, minimize=True)
    assert stop.update(1, 1.0, {}) and stop.update(2, 0.9, {})
    assert not stop.update(3, 0.95, {}) and not stop.should_stop
    assert not stop.update(4, float("nan"), {}) and stop.should_stop
    assert (stop.best_epoch, stop.best_value) == (2, 0.9)
    never = pipeline.EarlyStopping(patience=0)
    for e in range(1, 6):
        never.update(e, 0.0, {})
    assert not never.should_stop and never.best_epoch == 1


class _Bar:
    """What Progress needs of tqdm."""

    def __init__(self) -> None:
        self.postfix: dict[str, Any] = {}
        self.n = 0

    def set_postfix(self, postfix: dict[str, Any], refresh: bool = True) -> None:
        self.postfix = postfix

    def update(self, n: int) -> None:
        self.n += n


class _Checkpoints:
    """What Checkpointing needs of a Checkpointer: the saves, recorded."""

    def __init__(self) -> None:
        self.saved: list[tuple[int, Any, dict[str, Any]]] = []

    def save(self, epoch: int, model: Any, best: Any, state: dict[str, Any]) -> None:
        self.saved.append((epoch, best, state))


def test_composed_callbacks_validate_show_checkpoint_and_stop_in_order(tmp_path: Path) -> None:
    model = ALS(n_factors=2, iterations=1, use_bias=False, device="cpu")
    model.fit(sparse.random(6, 5, density=0.5, format="csr", dtype=np.float32, random_state=0))
    stopper = pipeline.EarlyStopping(patience=1)
    values = iter([0.5, 0.4])
    tracker = Tracker(tmp_path / "tb", enabled=False)
    bar, checkpoints, epochs = _Bar(), _Checkpoints(), []
    on_epoch = compose(
        [
            Validation(lambda m: {"recall@10": next(values)}, 1, "recall@10", stopper, tracker),
            Progress(bar),
            Checkpointing(checkpoints, 1, 5, stopper, lambda: {"train_seconds": 1.5}),
            UserHook(lambda epoch, *_: epochs.append(epoch)),
        ]
    )
    assert on_epoch(1, 12.0, 0.25, model) is False
    assert bar.postfix == {"s": "0.25", "loss": "12", "val recall@10": "0.5000"}
    assert stopper.best_epoch == 1
    assert torch.equal(stopper.best_model.item_factors, model.item_factors)
    # the best factors are this epoch's own: the checkpoint keeps no separate best.npz
    ((epoch, best, state),) = checkpoints.saved
    assert (epoch, best) == (1, None)
    assert state["epoch"] == 1 and state["train_seconds"] == 1.5
    assert state["early_stopping"]["best_epoch"] == 1
    # worse with patience 1: stop, and a stopping epoch is not checkpointed
    assert on_epoch(2, float("nan"), 0.5, model) is True
    assert bar.postfix == {"s": "0.50", "val recall@10": "0.4000"} and bar.n == 2
    assert len(checkpoints.saved) == 1 and epochs == [1, 2]
