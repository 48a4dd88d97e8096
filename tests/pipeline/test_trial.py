"""Tuning trials (``eval.test=false``): the final model is evaluated on the validation split,
never on the test split, and ``export=false`` writes no model, training data or index."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recsys import pipeline
from recsys.als import ALS
from recsys.config import validate

from .tiny import compose_cfg

TRIAL = ("eval.test=false", "eval.patience=1", "eval.k=[5,10]")


class _UnreadableTest:
    """A test split that serves its statistics but fails when its interactions are read."""

    def __init__(self, test) -> None:
        self.nnz = test.nnz
        self.stats = test.stats

    @property
    def matrix(self):
        raise AssertionError("a tuning trial read the test split")


@pytest.fixture
def no_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any evaluation on the test split (which needs its matrix) fails the test."""
    real = pipeline.prepare_data

    def prepare(cfg):
        data = real(cfg)
        return replace(data, test=_UnreadableTest(data.test))

    monkeypatch.setattr(sys.modules["recsys.pipeline.run"], "prepare_data", prepare)


def _recall(model: ALS, seen, truth, k: int) -> float:
    """Recall@k over the users with `truth` items, by brute force in float64."""
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    scores = model.user_embeddings(users).astype(np.float64) @ model.item_embeddings().T
    scores[seen[users].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = [
        len(set(top[row]) & set(truth.indices[truth.indptr[u] : truth.indptr[u + 1]]))
        / (truth.indptr[u + 1] - truth.indptr[u])
        for row, u in enumerate(users)
    ]
    return float(np.mean(hits))


def test_a_trial_reports_the_final_model_on_validation_and_never_reads_test(
    tmp_path: Path, no_test_split: None
) -> None:
    cfg = compose_cfg(*TRIAL)
    result = pipeline.run(cfg, tmp_path / "run")
    assert result.objective_split == "validation" and result.objective_name == "recall@10"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ranking = [k for k in metrics if "@" in k]
    assert ranking and all(k.startswith("validation_") for k in ranking)
    assert result.objective == metrics["validation_recall@10"]
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["objective"] == {
        "name": "recall@10", "split": "validation", "value": result.objective, "minimize": False,
    }  # fmt: skip
    assert (
        "validation_eval_seconds" in meta["timings"] and "test_eval_seconds" not in meta["timings"]
    )
    # the saved (best-epoch) model ranked against the fit part gives the reported value again
    model = ALS.load(tmp_path / "run" / "model.npz")
    assert len(model.history) == meta["best_epoch"]
    data = pipeline.prepare_data(validate(cfg))
    expected = _recall(model, data.fit.matrix, data.validation.matrix, 10)
    assert metrics["validation_recall@10"] == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "run" / "report.md").read_text().count("## Validation metrics") == 1


def test_a_trial_without_export_writes_no_model_train_or_index(
    tmp_path: Path, no_test_split: None
) -> None:
    cfg = compose_cfg(*TRIAL, "export=false", "eval.every=0", "als.iterations=2")
    result = pipeline.run(cfg, tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"metrics.json", "metadata.json", "report.md", "tb"} <= names
    assert not names & {"model.npz", "train.npz", "items.faiss", "items.faiss.json"}
    assert not set(result.artifacts) & {"model", "train", "index", "index_sidecar"}
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["index"] is None and "model" not in meta["artifacts"]
    assert meta["best_epoch"] is None and meta["epochs"] == 2  # fixed epochs, no early stopping
    assert result.objective == result.metrics["validation_recall@10"] > 0
    # the completed trial answered from its files says the same
    cfg = compose_cfg(*TRIAL, "export=false", "eval.every=0", "als.iterations=2",
                      f"run_dir={tmp_path / 'run'}")  # fmt: skip
    again = pipeline.run(cfg, tmp_path / "run", overrides=[])
    assert again.skipped and again.objective_split == "validation"
    assert again.objective == result.objective and "model" not in again.artifacts
