"""Tests of the benchmark: the smoke run end to end, the pieces it is made of, and the fairness
claims it prints (implicit and ours-hkv minimise the same objective)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.datasets import dataset_defaults, load_prepared, parse_dataset, prepare_dataset
from benchmarks.isolation import run_in_process, run_isolated
from benchmarks.results import add_ratios, add_ttq_ratios
from benchmarks.runs import (
    MODELS,
    RunSpec,
    _implicit_input,
    _implicit_model,
    _ours_model,
    evaluate_embeddings,
)
from benchmarks.tables import markdown_table, rounds_table

REPO = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts/benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One in-process smoke run shared by the output checks below."""
    out = tmp_path_factory.mktemp("bench")
    script = _load_script()
    rc = script.main(["--smoke", "--out", str(out), "--cache-dir", str(out / "cache")])
    doc = json.loads((out / "results.json").read_text())
    return rc, out, doc


def test_smoke_runs_every_mode_without_failures(smoke):
    rc, _, doc = smoke
    errors = [r["error"] for mode in ("table", "ttq", "scaling") for r in doc[mode] if "error" in r]
    assert errors == []
    assert rc == 0
    # 3 models x 2 factor counts x 2 rounds; 2 ttq runs; (2 multiples + 2 factor counts) x 2 models
    assert len(doc["table"]) == 12
    assert len(doc["ttq"]) == 2
    assert len(doc["scaling"]) == 8


def _round(r):
    return r["spec"]["tags"]["round"]


def test_smoke_table_values_are_sane(smoke):
    _, _, doc = smoke
    for r in doc["table"]:
        if _round(r) > 1:  # later rounds only time the training
            assert r.get("recall@20") is None
            continue
        assert 0.0 <= r["recall@20"] <= 1.0
        assert 0.0 <= r["ndcg@20"] <= 1.0
        assert r["epochs"] == r["iterations"] == 2
        assert len(r["epoch_seconds"]) == 2 and all(s > 0 for s in r["epoch_seconds"])
        assert r["seconds_per_epoch"] == pytest.approx(float(np.median(r["epoch_seconds"])))
        assert r["fit_seconds"] >= max(r["epoch_seconds"])
        assert r["peak_rss_total_mb"] >= r["peak_rss_mb"] > 0
        assert r["threads"] == 1
    # the low-rank synthetic data is learnable: every model beats a random ranking by far
    meta = doc["datasets"]["synthetic:tiny"]
    random_recall = 20 / meta["n_items"]
    assert all(r["recall@20"] > 2 * random_recall for r in doc["table"] if _round(r) == 1)


def test_smoke_ratio_is_ours_over_implicit_of_the_same_round(smoke):
    _, _, doc = smoke
    implicit = {(r["factors"], _round(r)): r for r in doc["table"] if r["model"] == "implicit-cg"}
    ours = [r for r in doc["table"] if r["library"] == "ours"]
    assert len(ours) == 8 and len(implicit) == 4
    for r in ours:
        ref = implicit[r["factors"], _round(r)]
        assert r["reference"] == "implicit-cg"
        assert r["ratio_epoch"] == pytest.approx(r["seconds_per_epoch"] / ref["seconds_per_epoch"])
        assert r["ratio_fit"] == pytest.approx(r["fit_seconds"] / ref["fit_seconds"])
    assert all("ratio_epoch" not in r for r in implicit.values())


def test_smoke_time_to_quality_curves(smoke):
    _, _, doc = smoke
    for r in doc["ttq"]:
        curve = r["curve"]
        assert 1 <= len(curve) <= 3
        seconds = [c["seconds"] for c in curve]
        assert all(s > 0 for s in seconds) and seconds == sorted(seconds)
        assert all(0.0 <= c["recall@20"] <= 1.0 for c in curve)
        reached = [c for c in curve if c["recall@20"] >= r["target"]]
        if r["reached"]:
            # training stops at the first epoch that reaches the target
            assert reached and reached[0] == curve[-1]
            assert r["seconds_to_target"] == pytest.approx(curve[-1]["seconds"])
        else:
            assert not reached and r["seconds_to_target"] is None
            assert r["stopped"] in ("iterations", "patience")
            best = int(np.argmax([c["recall@20"] for c in curve]))
            if r["stopped"] == "patience":  # two evaluations in a row without a new best
                assert len(curve) - 1 - best == 2
            else:
                assert len(curve) == 3
    ours = next(r for r in doc["ttq"] if r["model"] == "ours-ials")
    imp = next(r for r in doc["ttq"] if r["model"] == "implicit-cg")
    if ours["reached"] and imp["reached"]:
        assert ours["ratio_ttq"] == pytest.approx(
            ours["seconds_to_target"] / imp["seconds_to_target"]
        )


def test_smoke_scaling_grows_nnz(smoke):
    _, _, doc = smoke
    nnz = {r["dataset"]: doc["datasets"][r["dataset"]]["train_nnz"] for r in doc["scaling"]}
    assert set(nnz) == {"synthetic:tiny", "synthetic:tiny*2"}
    # twice the users and interactions; the random split keeps about the same train share
    assert nnz["synthetic:tiny*2"] == pytest.approx(2 * nnz["synthetic:tiny"], rel=0.05)
    for r in doc["scaling"]:
        assert r["seconds_per_epoch"] > 0
        assert "recall@20" not in r  # scaling runs skip evaluation
    sweeps = sorted(r["spec"]["tags"]["sweep"] for r in doc["scaling"])
    assert sweeps == ["factors"] * 4 + ["nnz"] * 4


def test_smoke_runs_the_models_in_turns_round_after_round(smoke):
    _, _, doc = smoke
    order = [(r["factors"], _round(r), r["model"]) for r in doc["table"]]
    models = ["ours-hkv", "ours-ials", "implicit-cg"]
    assert order == [(f, n, m) for f in (4, 8) for n in (1, 2) for m in models]


def test_smoke_writes_markdown_and_pngs(smoke):
    _, out, doc = smoke
    md = (out / "results.md").read_text()
    assert "| dataset | model | device | factors |" in md
    assert "## Speed over 2 interleaved rounds" in md
    assert doc["machine"]["cpu"] in md
    assert f"torch {doc['machine']['torch']}" in md
    for name in (
        "recall_vs_factors_synthetic_tiny",
        "recall_vs_seconds_synthetic_tiny",
        "seconds_vs_nnz",
        "seconds_vs_factors",
    ):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name}.png)" in md


def test_resume_keeps_matching_runs_and_runs_only_the_missing_ones(smoke, tmp_path):
    _, out, doc = smoke
    earlier = {**doc, "table": doc["table"][1:]}  # as if interrupted before the first table run
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    rc = _load_script().main(
        ["--smoke", "--resume", "--out", str(tmp_path), "--cache-dir", str(out / "cache")]
    )
    assert rc == 0
    again = json.loads((tmp_path / "results.json").read_text())
    rerun = [r for m in ("table", "ttq", "scaling") for r in again[m]
             if not r.get("kept_from_earlier_run")]  # fmt: skip
    assert [(r["model"], r["factors"]) for r in rerun] == [
        (doc["table"][0]["model"], doc["table"][0]["factors"])
    ]
    assert [r["epoch_seconds"] for r in again["table"][1:]] == [
        r["epoch_seconds"] for r in doc["table"][1:]
    ]
    kept = len(doc["table"]) - 1 + len(doc["ttq"]) + len(doc["scaling"])
    assert f"{kept} of the runs below were kept" in (tmp_path / "results.md").read_text()


# ------------------------------------------------------------------------------ pieces
def _result(model, factors, spe, fit, *, dataset="d", error=None, sweep=None, round_=None):
    r = {
        "dataset": dataset,
        "model": model,
        "library": MODELS[model][0],
        "device": "cpu",
        "factors": factors,
        "iterations": 3,
        "threads": 2,
        "seconds_per_epoch": spe,
        "fit_seconds": fit,
        "spec": {"tags": {k: v for k, v in (("sweep", sweep), ("round", round_)) if v}},
    }
    if error:
        r["error"] = error
    return r


def test_add_ratios_pairs_runs_with_the_same_configuration():
    rows = [
        _result("ours-hkv", 64, 3.0, 10.0),
        _result("implicit-cg", 64, 2.0, 8.0),
        _result("ours-ials", 128, 6.0, 30.0),  # no implicit run at 128 factors
        _result("implicit-cg", 128, 1.0, 1.0, dataset="other"),
        _result("ours-hkv", 32, 1.0, 1.0),
        _result("implicit-cg", 32, 1.0, 1.0, error="boom"),  # a failed reference is no reference
    ]
    add_ratios(rows)
    assert rows[0]["ratio_epoch"] == pytest.approx(1.5)
    assert rows[0]["ratio_fit"] == pytest.approx(1.25)
    assert rows[2]["ratio_epoch"] is None and rows[2]["reference"] is None
    assert rows[4]["ratio_epoch"] is None
    assert "ratio_epoch" not in rows[1]


def test_add_ratios_keeps_scaling_sweeps_apart():
    rows = [
        _result("ours-hkv", 64, 4.0, 4.0, sweep="nnz"),
        _result("implicit-cg", 64, 2.0, 2.0, sweep="nnz"),
        _result("ours-hkv", 64, 4.0, 4.0, sweep="factors"),
        _result("implicit-cg", 64, 1.0, 1.0, sweep="factors"),
    ]
    add_ratios(rows)
    assert rows[0]["ratio_epoch"] == pytest.approx(2.0)
    assert rows[2]["ratio_epoch"] == pytest.approx(4.0)


def test_add_ratios_pairs_runs_of_the_same_round():
    rows = [
        _result("ours-hkv", 64, 4.0, 4.0, round_=1),
        _result("implicit-cg", 64, 2.0, 2.0, round_=1),
        _result("ours-hkv", 64, 3.0, 3.0, round_=2),
        _result("implicit-cg", 64, 3.0, 3.0, round_=2),
    ]
    add_ratios(rows)
    assert [rows[0]["ratio_epoch"], rows[2]["ratio_epoch"]] == pytest.approx([2.0, 1.0])


def test_rounds_table_reports_medians_and_ranges_of_the_per_round_ratios():
    rows = []
    for n, (ours, ref) in enumerate([(4.0, 2.0), (3.0, 3.0), (5.0, 2.0)], 1):
        rows += [_result("ours-hkv", 64, ours, ours, round_=n),
                 _result("implicit-cg", 64, ref, ref, round_=n)]  # fmt: skip
    rows.append(_result("ours-hkv", 128, 1.0, 1.0))  # not part of a rounds run: left out
    add_ratios(rows)
    lines = rounds_table(rows).splitlines()
    assert len(lines) == 4  # header, rule, one row per model
    # ratios 2.0, 1.0, 2.5: median 2.0; seconds 4, 3, 5: median 4
    assert lines[2] == "| d | ours-hkv | cpu | 64 | 3 | 4.000 (3.000-5.000) | 2.000 (1.000-2.500) |"
    assert lines[3] == "| d | implicit-cg | cpu | 64 | 3 | 2.000 (2.000-3.000) | - |"


def test_add_ttq_ratios_uses_the_fastest_reference():
    rows = [
        {**_result("ours-ials", 512, 1, 1), "seconds_to_target": 6.0},
        {**_result("implicit-cg", 256, 1, 1), "seconds_to_target": None},
        {**_result("implicit-cg", 512, 1, 1), "seconds_to_target": 12.0},
        {**_result("implicit-cg", 1024, 1, 1), "seconds_to_target": 20.0},
        {**_result("ours-ials", 64, 1, 1), "seconds_to_target": None},
    ]
    add_ttq_ratios(rows)
    assert rows[0]["ratio_ttq"] == pytest.approx(0.5)
    assert rows[0]["reference_seconds_to_target"] == 12.0
    assert rows[4]["ratio_ttq"] is None


def test_parse_dataset_names():
    assert parse_dataset("gowalla")["family"] == "gowalla"
    assert parse_dataset("ml-100k")["family"] == "ml-100k"
    info = parse_dataset("synthetic:small*4")
    assert (info["family"], info["preset"], info["multiple"]) == ("synthetic", "small", 4)
    assert parse_dataset("synthetic:tiny")["multiple"] == 1
    for bad in ("movielens", "synthetic:huge", "synthetic:small*x", "synthetic:"):
        with pytest.raises(ValueError, match=r"dataset|preset"):
            parse_dataset(bad)


def test_markdown_table_formats_missing_values():
    text = markdown_table(["a", "b", "c"], [[1, 0.5, None], ["x", float("nan"), 0.0001234]])
    lines = text.splitlines()
    assert lines[0] == "| a | b | c |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| 1 | 0.500 | - |"
    assert lines[3] == "| x | - | 0.000123 |"


def test_evaluate_embeddings_matches_brute_force():
    rng = np.random.default_rng(3)
    n_users, n_items, d = 40, 60, 5
    dense = rng.random((n_users, n_items))
    held = (dense >= 0.2) & (dense < 0.3)
    held[5] = False  # a user without test items is not scored
    train = sp.csr_matrix((dense < 0.2).astype(np.float32))
    test = sp.csr_matrix(held.astype(np.float32))
    users_v = rng.standard_normal((n_users, d)).astype(np.float32)
    items_v = rng.standard_normal((n_items, d)).astype(np.float32)

    recalls, ndcgs = [], []
    scores = users_v.astype(np.float64) @ items_v.T.astype(np.float64)
    for u in range(n_users):
        rel = set(test.indices[test.indptr[u] : test.indptr[u + 1]])
        if not rel:
            continue
        s = scores[u].copy()
        s[train.indices[train.indptr[u] : train.indptr[u + 1]]] = -np.inf
        top = np.argsort(-s, kind="stable")[:20]
        gains = np.array([i in rel for i in top], dtype=float)
        recalls.append(gains.sum() / len(rel))
        disc = 1.0 / np.log2(np.arange(2, 22))
        ndcgs.append((gains * disc).sum() / disc[: min(20, len(rel))].sum())

    full = evaluate_embeddings(users_v, items_v, train, test)
    assert full["recall@20"] == pytest.approx(np.mean(recalls), abs=1e-6)
    assert full["ndcg@20"] == pytest.approx(np.mean(ndcgs), abs=1e-6)
    # vectors for the users with test items only (the order of their rows) give the same numbers
    rows = np.flatnonzero(np.diff(test.indptr) > 0)
    assert evaluate_embeddings(users_v[rows], items_v, train, test) == pytest.approx(full)
    with pytest.raises(ValueError, match="one per user"):
        evaluate_embeddings(users_v[:3], items_v, train, test)


def _item_side_residual(
    r: sp.csr_matrix, x: np.ndarray, y: np.ndarray, alpha: float, lam: float
) -> float:
    """Largest relative error of y against the exact HKV item solve given x (dense float64):
    y_i = (X^T X + lam I + sum_u alpha r_ui x_u x_u^T)^-1 sum_u (1 + alpha r_ui) x_u [r_ui > 0]."""
    x = x.astype(np.float64)
    dense = r.toarray().astype(np.float64)
    worst = 0.0
    for i in range(dense.shape[1]):
        obs = dense[:, i] > 0
        c = 1.0 + alpha * dense[obs, i]
        a = x.T @ x + lam * np.eye(x.shape[1]) + (x[obs].T * (c - 1.0)) @ x[obs]
        b = x[obs].T @ c
        ref = np.linalg.solve(a, b)
        worst = max(worst, np.abs(y[i] - ref).max() / max(np.abs(ref).max(), 1e-12))
    return worst


def _hkv_counts() -> tuple[sp.csr_matrix, float, float]:
    """A small count matrix (c = 1 + alpha * r is not constant), alpha and lambda: the problem
    whose exact HKV item solve :func:`_item_side_residual` checks."""
    rng = np.random.default_rng(0)
    r = sp.random(30, 20, density=0.25, random_state=rng, dtype=np.float32, format="csr")
    r.data[:] = rng.integers(1, 4, size=r.nnz)
    return r, 3.0, 0.7


def test_implicit_and_ours_hkv_minimise_the_same_objective(tmp_path):
    """The like-for-like table's claim: implicit given 1 + alpha * r (its alpha = 1) solves the
    same normal equations as our hkv weighting. Both exact solvers' last item half-step must match
    the float64 HKV solution for their own user factors."""
    r, alpha, lam = _hkv_counts()
    hyper = {"hkv_alpha": alpha, "hkv_regularization": lam}

    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    from recsys.als import ALS

    spec = RunSpec(
        dataset={"name": "x"},
        model="implicit-cholesky",
        factors=4,
        iterations=4,
        threads=1,
        hyper=hyper,
    )
    with threadpoolctl.threadpool_limits(1, "blas"):
        imp = _implicit_model(spec)
        assert isinstance(imp, AlternatingLeastSquares) and imp.alpha == 1.0
        imp.fit(_implicit_input(r, alpha), show_progress=False)
    assert _item_side_residual(r, imp.user_factors, imp.item_factors, alpha, lam) < 1e-4

    spec = RunSpec(
        dataset={"name": "x"}, model="ours-hkv", factors=4, iterations=4, threads=1, hyper=hyper
    )
    ours = _ours_model(spec)
    assert isinstance(ours, ALS)
    ours.fit(r)
    x = ours.user_factors.double().numpy()
    y = ours.item_factors.double().numpy()
    assert _item_side_residual(r, x, y, alpha, lam) < 1e-4


def test_run_isolated_reports_its_own_process(tmp_path):
    meta = prepare_dataset("synthetic:tiny", tmp_path / "no-data", tmp_path / "cache")
    # 6,000 interactions; the split only drops test entries of items unseen in train
    assert 5900 <= meta["train_nnz"] + meta["test_nnz"] <= 6000
    assert meta["test_nnz"] == pytest.approx(0.2 * 6000, rel=0.1)
    assert meta["train_test_overlap"] == 0
    spec = RunSpec(
        dataset=meta,
        model="ours-hkv",
        factors=4,
        iterations=2,
        threads=1,
        hyper={"hkv_alpha": 5.0, "hkv_regularization": 1.0},
        evaluate=False,
    )
    result = run_isolated(spec, timeout=120, workdir=tmp_path / "work")
    assert result.get("error") is None
    assert result["isolated"] is True
    assert result["epochs"] == 2 and result["seconds_per_epoch"] > 0
    assert result["peak_rss_mb"] >= result["rss_before_fit_mb"] > 0
    # a run that cannot finish becomes a result with an error, not an exception
    failed = run_isolated(spec, timeout=0.01, workdir=tmp_path / "work")
    assert "timed out" in failed["error"] and failed["model"] == "ours-hkv"


def test_prepared_dataset_is_cached_and_binary(tmp_path):
    meta = prepare_dataset("synthetic:tiny", tmp_path, tmp_path / "cache", seed=1)
    train, test = load_prepared(meta)
    assert train.shape == test.shape == (meta["n_users"], meta["n_items"])
    assert np.all(train.data == 1.0) and np.all(test.data == 1.0)
    assert train.multiply(test).nnz == 0
    again = prepare_dataset("synthetic:tiny", tmp_path, tmp_path / "cache", seed=1)
    assert again == meta
    assert math.isfinite(meta["prepare_seconds"])


@pytest.mark.parametrize("model", ["ours-ials", "implicit-cg"])
def test_time_to_quality_gives_up_on_an_unreachable_target(tmp_path, model):
    meta = prepare_dataset("synthetic:tiny", tmp_path, tmp_path / "cache")
    hyper = dataclasses.asdict(dataset_defaults("synthetic:tiny"))
    spec = RunSpec(
        dataset=meta,
        model=model,
        factors=4,
        iterations=6,
        threads=1,
        hyper=hyper,
        target=1.01,
        patience=1,
    )
    r = run_in_process(spec)
    assert r.get("error") is None
    assert not r["reached"] and r["seconds_to_target"] is None
    recalls = [c["recall@20"] for c in r["curve"]]
    assert len(recalls) == r["epochs"]  # one evaluation per trained epoch
    if r["stopped"] == "patience":  # the last evaluation did not beat the best before it
        assert len(recalls) < 6 and recalls[-1] <= max(recalls[:-1])
    else:
        assert r["stopped"] == "iterations" and len(recalls) == 6
        assert all(b > a for a, b in itertools.pairwise(recalls[:-1]))
    assert r["recall@20"] == max(recalls)
