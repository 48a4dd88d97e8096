"""The tiny synthetic run the pipeline tests share: its overrides, the composed config and
scripted validation values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from recsys import pipeline
from recsys.config import register_configs

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"

#: A run that takes about a second: 300 users x 200 items, 4 factors, 4 epochs.
TINY = [
    "data.preset=tiny",
    "als.n_factors=4",
    "als.iterations=4",
    "als.regularization=0.05",
    "als.device=cpu",
    "eval.k=[5,10]",
    "eval.objective=recall@10",
    "eval.patience=0",
    "checkpoint.every=2",
    "progress=false",
    "tracking.projector_max_items=50",
]

register_configs()


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*TINY, *overrides])


def script_validation(monkeypatch: pytest.MonkeyPatch, values: Sequence[float]) -> None:
    """Make the validation evaluations return `values` as recall@5 and recall@10, in turn; the
    final test evaluation stays real."""
    scripted = iter(values)
    real = pipeline.evaluate_model

    def fake(model, conf, seen, truth, **kwargs):
        value = next(scripted, None)
        if value is None:  # the final test evaluation
            return real(model, conf, seen, truth, **kwargs)
        return {"recall@10": value, "recall@5": value}

    monkeypatch.setattr("recsys.pipeline.fit.evaluate_model", fake)  # the validation's
