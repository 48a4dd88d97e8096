"""Tests of implicit's tuned benchmark: the pipeline's split, validation-only trials, the refit
tested once, a continued study and the table with and without our run."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("implicit")
pytest.importorskip("optuna")

from benchmarks import tuning
from recsys.pipeline.data import prepare_data

REPO = Path(__file__).resolve().parents[2]
#: a tiny study: 1 thread (deterministic), few factors, few epochs
PROTOCOL = tuning.Protocol(trials=2, max_epochs=3, threads=1, space=tuning.Space(factors=(4, 8)))


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "benchmark_tuned", REPO / "scripts/benchmark_tuned.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared():
    conf = tuning.compose_config(tuning.dataset_overrides("tiny", REPO))
    return conf, prepare_data(conf)


def test_split_is_the_pipelines(prepared) -> None:
    """fit and validation carved from train, and fit, validation and test disjoint."""
    conf, data = prepared
    assert conf.split.validation == 0.1 and conf.eval.patience == 2
    fit, validation, test = data.fit.matrix, data.validation.matrix, data.test.matrix
    assert validation.nnz > 0 and test.nnz > 0
    for a, b in ((fit, validation), (fit, test), (validation, test)):
        assert a.multiply(b).nnz == 0
    # both carved from train (whose interactions of items only validation holds are dropped)
    carved = fit + validation
    assert carved.multiply(data.train.matrix).nnz == carved.nnz
    dropped = data.report["validation"]["cold_item_interactions_dropped"]
    assert data.train.matrix.nnz - carved.nnz == dropped


def test_trials_see_validation_only_and_the_refit_tests_once(prepared, tmp_path, monkeypatch):
    conf, data = prepared
    truths: list[str] = []
    evaluate = tuning.evaluate_model

    def spy(model, cfg, seen, truth, **kwargs):
        name = "validation" if truth is data.validation.matrix else "test"
        assert name == "validation" or truth is data.test.matrix
        assert seen is (data.fit.matrix if name == "validation" else data.train.matrix)
        truths.append(name)
        return evaluate(model, cfg, seen, truth, **kwargs)

    monkeypatch.setattr(tuning, "evaluate_model", spy)
    study = tuning.open_study(tmp_path, conf, PROTOCOL, "tiny")
    seconds = tuning.tune(study, conf, data, PROTOCOL, log=lambda line: None)
    assert set(truths) == {"validation"} and len(study.trials) == 2 and seconds > 0
    # the objective is the best epoch's recall@20 on validation: retraining that trial's
    # parameters for its epochs on fit gives the same value
    best = study.best_trial
    epochs = best.user_attrs["epochs"]
    assert best.value == max(e["recall@20"] for e in best.user_attrs["evaluations"])
    factors = tuning.fit_implicit(data.fit.matrix, best.params, epochs, threads=1, seed=conf.seed)
    again = evaluate(factors, conf, data.fit.matrix, data.validation.matrix, objective_only=True)
    assert again["recall@20"] == pytest.approx(best.value, abs=1e-6)
    n_before = len(truths)
    result = tuning.study_result(study, conf, data, PROTOCOL, seconds)
    assert truths[n_before:] == ["test"]
    assert result["epochs"] == epochs and result["best_params"] == best.params
    assert {"recall@10", "ndcg@10", "recall@20", "ndcg@20"} <= set(result["test"])


def test_an_interrupted_study_continues(prepared, tmp_path) -> None:
    conf, data = prepared
    one = dataclasses.replace(PROTOCOL, trials=1)
    first = tuning.tune(tuning.open_study(tmp_path, conf, one, "tiny"), conf, data, one)
    study = tuning.open_study(tmp_path, conf, PROTOCOL, "tiny")  # the full budget: 1 more trial
    total = tuning.tune(study, conf, data, PROTOCOL, log=lambda line: None)
    assert [t.number for t in study.trials] == [0, 1] and total > first
    assert tuning.tune(study, conf, data, PROTOCOL) == total  # complete: nothing more runs
    other = tuning.compose_config(tuning.dataset_overrides("tiny", REPO, seed=1))
    with pytest.raises(ValueError, match="other settings"):
        tuning.open_study(tmp_path, other, PROTOCOL, "tiny")


def _ours_run(folder: Path) -> Path:
    folder.mkdir()
    metrics = {"recall@10": 0.3, "ndcg@10": 0.2, "recall@20": 0.5, "ndcg@20": 0.25}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    protocol = {
        "n_trials": {"COMPLETE": 2},
        "study_seconds": 10.0,
        "best_params": {"als.n_factors": 8},
        "best_epoch": 3,
    }
    (folder / "metadata.json").write_text(json.dumps({"protocol": protocol}))
    return folder


def test_the_script_writes_the_table_with_and_without_ours(tmp_path, capsys) -> None:
    script = _load_script()
    alone, both = tmp_path / "alone", tmp_path / "both"
    assert script.main(["--smoke", "--out", str(alone)]) == 0
    table = (alone / "table.md").read_text()
    assert "| implicit | 2 |" in table and "ours" not in table
    results = json.loads((alone / "results.json").read_text())
    assert results["ours"] is None and results["implicit"]["trials"] == 2
    assert script.main(["--smoke", "--out", str(alone)]) == 2  # finished: never overwritten
    assert "finished results" in capsys.readouterr().err

    ours = _ours_run(tmp_path / "ours")
    assert script.main(["--smoke", "--out", str(both), "--ours", str(ours)]) == 0
    results = json.loads((both / "results.json").read_text())
    implicit = results["implicit"]["test"]
    rows = (both / "table.md").read_text().splitlines()
    assert rows[2].startswith("| ours | 2 | 10.000 | als.n_factors=8 | 3 |")
    assert rows[3].startswith("| implicit | 2 |")
    ratio = rows[4].split("|")[6:10]
    expected = [0.3 / implicit["recall@10"], 0.2 / implicit["ndcg@10"], 0.5 / implicit["recall@20"]]
    assert np.allclose([float(r) for r in ratio[:3]], expected, rtol=2e-3, atol=1e-3)


def test_an_unfinished_folder_continues_from_the_script(tmp_path, prepared) -> None:
    conf, data = prepared
    script = _load_script()
    smoke = tuning.Protocol(
        trials=1, max_epochs=script.SMOKE["max_epochs"], threads=2,
        space=tuning.Space(factors=script.SMOKE["factors"]),
    )  # fmt: skip
    tuning.tune(tuning.open_study(tmp_path, conf, smoke, "tiny"), conf, data, smoke)
    assert script.main(["--smoke", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["implicit"]["trials"] == 2
