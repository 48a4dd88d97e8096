"""recsys.pipeline.callbacks: the early-stopping state machine."""

from __future__ import annotations

from recsys import pipeline


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
