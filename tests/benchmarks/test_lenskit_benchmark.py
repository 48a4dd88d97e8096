"""LensKit's exact ImplicitMFScorer in the ALS benchmark: skipped with a note when lenskit is not
installed; when it is, it minimises our HKV loss and its runs give the ours / LensKit ratios."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from benchmarks.datasets import dataset_defaults, prepare_dataset
from benchmarks.isolation import run_in_process
from benchmarks.runs import RunSpec, missing_library
from tests.benchmarks.test_als_benchmark import _hkv_counts, _item_side_residual, _load_script

needs_lenskit = pytest.mark.skipif(
    importlib.util.find_spec("lenskit") is None, reason="lenskit is not installed"
)


def _table_run(tmp_path, models):
    """An in-process table run of ``models`` on the tiny synthetic dataset: (rc, json, markdown)."""
    out = tmp_path / "bench"
    args = ["--datasets", "synthetic:tiny", "--models", *models, "--factors", "4", "8"]
    args += ["--iterations", "2", "--threads", "1", "--in-process"]
    rc = _load_script().main([*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    doc = json.loads((out / "results.json").read_text())
    return rc, doc, (out / "results.md").read_text()


def test_lenskit_is_skipped_with_a_note_when_not_installed(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lenskit" else find_spec(name, *a),
    )
    note = "lenskit-hkv skipped: lenskit is not installed"
    assert missing_library("lenskit-hkv").startswith(note)
    assert missing_library("ours-hkv") is None
    rc, doc, text = _table_run(tmp_path, ["ours-hkv", "lenskit-hkv"])
    assert rc == 0
    assert [r["model"] for r in doc["table"]] == ["ours-hkv", "ours-hkv"]
    assert len(doc["skipped"]) == 1 and doc["skipped"][0].startswith(note)
    assert f"Skipped: {note}" in text
    assert "ours/LensKit" not in text  # no LensKit run, no LensKit columns
    assert all(r["ratio_epoch"] is None for r in doc["table"])  # no implicit run either


@needs_lenskit
def test_lenskit_and_ours_hkv_minimise_the_same_objective():
    """The table's claim: ImplicitMFScorer given the counts as ratings (use_ratings=True,
    weight = alpha, regularization = lambda) solves our HKV normal equations: its last item
    half-step matches the float64 HKV solution for its own user factors."""
    from benchmarks.runs import _lenskit_input, _lenskit_model

    r, alpha, lam = _hkv_counts()
    hyper = {"hkv_alpha": alpha, "hkv_regularization": lam}
    spec = RunSpec({"name": "x"}, "lenskit-hkv", factors=4, iterations=4, threads=1, hyper=hyper)
    model = _lenskit_model(spec)
    model.train(_lenskit_input(r))
    x = model.user_embeddings.astype(np.float64)
    y = model.item_embeddings.astype(np.float64)
    assert x.shape == (30, 4) and y.shape == (20, 4)  # every row and column, in index order
    assert _item_side_residual(r, x, y, alpha, lam) < 1e-4


@needs_lenskit
def test_lenskit_runs_give_the_ours_over_lenskit_ratios(tmp_path):
    rc, doc, text = _table_run(tmp_path, ["ours-hkv", "implicit-cg", "lenskit-hkv"])
    assert rc == 0 and doc["skipped"] == []
    runs = {(r["model"], r["factors"]): r for r in doc["table"]}
    assert len(runs) == 6
    for f in (4, 8):
        ours, lk = runs["ours-hkv", f], runs["lenskit-hkv", f]
        assert lk["library"] == "lenskit" and lk["epochs"] == 2 and lk["seconds_per_epoch"] > 0
        assert ours["exact_peer"] == "lenskit-hkv" and ours["reference"] == "implicit-cg"
        assert ours["ratio_exact_peer_epoch"] == pytest.approx(
            ours["seconds_per_epoch"] / lk["seconds_per_epoch"]
        )
        assert ours["ratio_exact_peer_fit"] == pytest.approx(
            ours["fit_seconds"] / lk["fit_seconds"]
        )
        # the same loss from different starting points: comparable quality after two epochs
        assert lk["recall@20"] > 0.5 * ours["recall@20"] > 0
    header = text.split("## Speed and quality")[1].strip().splitlines()[0]
    assert header.endswith("| ours/LensKit s/epoch | ours/LensKit fit s |")
    assert "# recsys ALS vs implicit ALS and LensKit" in text


@needs_lenskit
def test_lenskit_time_to_quality_scores_every_epoch(tmp_path):
    meta = prepare_dataset("synthetic:tiny", tmp_path, tmp_path / "cache")
    hyper = dataclasses.asdict(dataset_defaults("synthetic:tiny"))
    spec = RunSpec(
        dataset=meta, model="lenskit-hkv", factors=4, iterations=3, threads=1, hyper=hyper,
        target=1.01,
    )  # fmt: skip
    r = run_in_process(spec)
    assert r.get("error") is None
    assert not r["reached"] and r["stopped"] == "iterations"
    recalls = [c["recall@20"] for c in r["curve"]]
    assert len(recalls) == r["epochs"] == 3
    assert recalls[-1] > recalls[0]  # the factors scored after each epoch are the trained ones
