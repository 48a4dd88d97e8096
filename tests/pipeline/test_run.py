"""The training pipeline end to end on the tiny synthetic preset (compose API, in-process).

Every artifact is checked against an independent computation: the saved model's scores give the
reported metrics again by brute force, the saved index returns the brute-force top-k, the
TensorBoard event files are read back with TensorBoard's own readers, and a run interrupted by
an exception resumes to exactly the factors of an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from recsys import pipeline
from recsys.als import ALS
from recsys.config import ConfigError, validate
from recsys.data.interactions import Interactions
from recsys.pipeline.fit import als_kwargs
from recsys.pipeline.tracking import HPARAMS_RUN

from .tiny import compose_cfg, script_validation


def _brute_force_recall_ndcg(model: ALS, seen, test, k: int) -> tuple[float, float]:
    """Recall@k (hits / |test items|) and NDCG@k over users with test items, dense float64."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    scores = (
        model.user_embeddings(users).astype(np.float64)
        @ model.item_embeddings().astype(np.float64).T
    )
    seen_dense = seen[users].toarray() > 0
    scores[seen_dense] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    recalls, ndcgs = [], []
    for row, u in enumerate(users):
        truth = set(test.indices[test.indptr[u] : test.indptr[u + 1]].tolist())
        gains = np.array([1.0 if i in truth else 0.0 for i in top[row]])
        recalls.append(gains.sum() / len(truth))
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        ndcgs.append((gains * discounts).sum() / discounts[: min(len(truth), k)].sum())
    return float(np.mean(recalls)), float(np.mean(ndcgs))


# ------------------------------------------------------------------------------ artifacts
def test_run_writes_every_artifact_and_returns_objective(tiny_run: pipeline.RunResult) -> None:
    out = tiny_run.output_dir
    names = {p.name for p in out.iterdir()}
    assert {"model.npz", "items.faiss", "items.faiss.json", "train.npz", "metrics.json",
            "metadata.json", "tb"} <= names  # fmt: skip
    assert "checkpoints" not in names  # removed once the run is complete
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("recall@5", "recall@10", "ndcg@10", "coverage@10", "train_seconds", "epochs"):
        assert key in metrics, key
    assert all(isinstance(v, int | float) for v in metrics.values())
    assert metrics["epochs"] == 4
    assert tiny_run.objective_name == "recall@10"
    assert tiny_run.objective == metrics["recall@10"]
    assert 0.0 < metrics["recall@10"] <= 1.0
    assert metrics["train_seconds"] >= metrics["fit_seconds"] > 0


def test_metadata_records_config_data_versions_and_history(tiny_run: pipeline.RunResult) -> None:
    meta = json.loads((tiny_run.output_dir / "metadata.json").read_text())
    cfg = meta["config"]
    assert cfg["als"]["n_factors"] == 4 and cfg["als"]["seed"] == 0  # resolved interpolation
    assert validate(cfg).als.n_factors == 4  # the saved config is a valid config again
    data = meta["data"]
    assert data["full"]["n_users"] == 300 and data["full"]["n_items"] == 200
    # every interaction is in exactly one part, except held-out ones on items unseen in training
    report = data["split_report"]
    dropped = report.get("cold_item_interactions_dropped", 0)
    assert data["train"]["nnz"] + data["test"]["nnz"] + dropped == data["full"]["nnz"]
    dropped = report["validation"].get("cold_item_interactions_dropped", 0)
    assert data["fit"]["nnz"] + data["validation"]["nnz"] + dropped == data["train"]["nnz"]
    assert {"python", "torch", "numpy", "scipy", "faiss"} <= set(meta["versions"])
    assert meta["device"]["als"] == "cpu"
    git = meta["git"]
    assert git is None or len(git["commit"]) == 40
    history = meta["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for h in history:
        assert {"loss", "observed", "unobserved", "regularization", "seconds"} <= set(h)
        assert h["loss"] == pytest.approx(h["observed"] + h["unobserved"] + h["regularization"])
    assert [e["epoch"] for e in meta["evaluations"]] == [1, 2, 3, 4]
    assert meta["best_epoch"] == max(meta["evaluations"], key=lambda e: e["recall@10"])["epoch"]


def test_saved_model_reproduces_the_reported_metrics(tiny_run: pipeline.RunResult) -> None:
    out = tiny_run.output_dir
    model = ALS.load(out / "model.npz")
    train = Interactions.load(out / "train.npz")
    prepared = pipeline.prepare_data(validate(compose_cfg()))
    # the saved training interactions are the split's (seen items for serving)
    assert (train.matrix != prepared.train.matrix).nnz == 0
    metrics = json.loads((out / "metrics.json").read_text())
    recall, ndcg = _brute_force_recall_ndcg(model, prepared.train.matrix, prepared.test.matrix, 10)
    assert metrics["recall@10"] == pytest.approx(recall, abs=1e-6)
    assert metrics["ndcg@10"] == pytest.approx(ndcg, abs=1e-6)
    # the file holds the best evaluated epoch's factors and that epoch's history
    assert len(model.history) == json.loads((out / "metadata.json").read_text())["best_epoch"]


def test_saved_index_returns_the_brute_force_top_k(tiny_run: pipeline.RunResult) -> None:
    from recsys.index import load_index, read_sidecar

    out = tiny_run.output_dir
    model = ALS.load(out / "model.npz")
    index = load_index(out / "items.faiss", model=model, model_path=out / "model.npz")
    assert read_sidecar(out / "items.faiss")["kind"] == "flat"
    users = np.arange(0, 300, 7)
    queries = model.user_embeddings(users)
    ids, scores = index.search(queries, 10)
    dense = queries.astype(np.float64) @ model.item_embeddings().astype(np.float64).T
    want = np.sort(dense, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(dense, ids, axis=1), want, rtol=1e-5, atol=1e-5)


def test_tensorboard_events_hold_losses_metrics_histograms_projector_hparams(
    tiny_run: pipeline.RunResult,
) -> None:
    tb = tiny_run.output_dir / "tb"
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    meta = json.loads((tiny_run.output_dir / "metadata.json").read_text())
    losses = acc.Scalars("loss/total")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [e.value for e in losses], [h["loss"] for h in meta["history"]], rtol=1e-6
    )
    for tag in ("loss/observed", "loss/unobserved", "loss/regularization", "time/epoch_seconds",
                "validation/recall@10", "test/recall@10"):  # fmt: skip
        assert tag in tags["scalars"], tag
    assert {"factors/user_norm", "factors/item_norm"} <= set(tags["histograms"])
    assert len(acc.Histograms("factors/item_norm")) == 4
    assert (tb / "projector_config.pbtxt").is_file()
    (metadata_tsv,) = tb.rglob("metadata.tsv")
    assert len(metadata_tsv.read_text().splitlines()) == 1 + 50  # header + capped items
    # hparams: one session in the fixed nested run, with the config and the final metrics
    runs = sorted(p.name for p in tb.iterdir() if p.is_dir() and p.name != "00004")
    assert runs == [HPARAMS_RUN]
    from tensorboard.plugins.hparams import plugin_data_pb2

    starts = []
    for path in (tb / HPARAMS_RUN).glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    if data.HasField("session_start_info"):
                        starts.append(data.session_start_info)
    (start,) = starts
    assert start.hparams["als.n_factors"].number_value == 4
    assert start.hparams["als.weighting"].string_value == "hkv"
    hp = EventAccumulator(str(tb / HPARAMS_RUN))
    hp.Reload()
    metrics = json.loads((tiny_run.output_dir / "metrics.json").read_text())
    assert hp.Scalars("hparam/recall@10")[0].value == pytest.approx(metrics["recall@10"])


# ------------------------------------------------------------------------------ early stopping
def test_early_stopping_keeps_the_best_epoch(tmp_path: Path, monkeypatch) -> None:
    """Scripted validation values 0.1, 0.3, 0.2, 0.25 with patience 2: stop after epoch 4 and
    keep epoch 2's factors, which equal a 2-epoch run's."""
    script_validation(monkeypatch, [0.1, 0.3, 0.2, 0.25])
    cfg = compose_cfg("als.iterations=8", "eval.patience=2", "checkpoint.every=0")
    result = pipeline.run(cfg, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert [e["epoch"] for e in meta["evaluations"]] == [1, 2, 3, 4]
    assert meta["best_epoch"] == 2 and result.metrics["best_epoch"] == 2
    assert result.metrics["epochs"] == 4 and len(meta["history"]) == 4
    assert result.metrics["validation_recall@10"] == 0.3
    kept = ALS.load(tmp_path / "run" / "model.npz")
    conf = validate(cfg)
    two = ALS(**{**als_kwargs(conf), "iterations": 2})
    two.fit(pipeline.prepare_data(conf).fit)
    assert torch.equal(kept.user_factors, two.user_factors)
    assert torch.equal(kept.item_factors, two.item_factors)


# ------------------------------------------------------------------------------ resume
class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_factors(
    tiny_run: pipeline.RunResult, tmp_path: Path
) -> None:
    out = tmp_path / "run"

    def kill_after_epoch_3(epoch: int, *_: object) -> None:
        if epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        pipeline.run(compose_cfg(), out, epoch_hook=kill_after_epoch_3)
    stray = out / ".model.npz.abc123.tmp"  # what a kill during ALS.save would leave
    stray.write_bytes(b"half a model")
    # nothing final was written; the checkpoint after epoch 2 is complete
    assert not (out / "metrics.json").exists() and not (out / "model.npz").exists()
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "epoch-00002"
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]

    resumed = pipeline.run(compose_cfg("resume=true"), out)
    assert resumed.resumed_from == 2
    assert not stray.exists()
    want = ALS.load(tiny_run.output_dir / "model.npz")
    got = ALS.load(out / "model.npz")
    for name in ("user_factors", "item_factors"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    expected = {k: v for k, v in tiny_run.metrics.items() if not k.endswith("_seconds")}
    assert {k: v for k, v in resumed.metrics.items() if not k.endswith("_seconds")} == expected
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["resumed_from_epoch"] == 2 and [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    # resuming a complete run does nothing and reports its objective
    again = pipeline.run(compose_cfg("resume=true"), out)
    assert again.skipped and again.objective == resumed.objective


def test_resume_keeps_the_checkpoint_config_and_rejects_conflicts(tmp_path: Path) -> None:
    out = tmp_path / "run"

    def stop(epoch: int, *_: object) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        pipeline.run(compose_cfg("als.n_factors=3"), out, epoch_hook=stop)
    # a typed override that contradicts the checkpoint is refused, in one line
    with pytest.raises(
        ConfigError, match=r"^cannot resume .*als\.n_factors \(checkpoint 3, now 5\)"
    ):
        pipeline.run(
            compose_cfg("als.n_factors=5", "resume=true"),
            out,
            overrides=["als.n_factors=5", "resume=true"],
        )
    # `resume=true` alone continues with the checkpoint's settings (3 factors, not the default 4)
    result = pipeline.run(compose_cfg("resume=true"), out, overrides=["resume=true"])
    assert result.resumed_from == 2
    assert ALS.load(out / "model.npz").n_factors == 3


# ------------------------------------------------------------------------------ explicit
def test_explicit_run_reports_rmse_that_the_model_reproduces(tmp_path: Path) -> None:
    cfg = compose_cfg("als=explicit", "als.n_factors=4", "als.iterations=3", "eval=rating",
                      "eval.objective=rmse", "eval.k=[10]", "eval.patience=0")  # fmt: skip
    result = pipeline.run(cfg, tmp_path / "run")
    assert result.objective_name == "rmse"
    metrics = result.metrics
    assert {"rmse", "mae", "recall@10"} <= set(metrics)
    model = ALS.load(tmp_path / "run" / "model.npz")
    test = pipeline.prepare_data(validate(cfg)).test.matrix.tocoo()
    pred = model.predict(test.row, test.col).astype(np.float64)
    rmse = float(np.sqrt(np.mean((pred - test.data) ** 2)))
    assert metrics["rmse"] == pytest.approx(rmse, rel=1e-5)
    assert metrics["rmse"] < 1.5  # ratings are 1..5 with sd about 1.2: the model learned something


def test_posterior_sampling_run_saves_the_averaged_model(tmp_path: Path) -> None:
    cfg = compose_cfg("als=explicit", "als.n_factors=3", "als.iterations=2", "eval=rating",
                      "eval.objective=rmse", "eval.k=[10]", "eval.patience=0",
                      "als.posterior_samples=4", "als.posterior_burn_in=2")  # fmt: skip
    result = pipeline.run(cfg, tmp_path / "run")
    model = ALS.load(tmp_path / "run" / "model.npz")
    assert model.posterior == {"samples": 4, "burn_in": 2, "seed": 0, "prior": "learned"}
    assert model.user_factors.shape[1] == 4 * 3  # the draws side by side
    test = pipeline.prepare_data(validate(cfg)).test.matrix.tocoo()
    pred = model.predict(test.row, test.col).astype(np.float64)
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(np.mean((pred - test.data) ** 2)))
    metadata = json.loads((tmp_path / "run" / "metadata.json").read_text())
    epochs = [h["epoch"] for h in metadata["posterior_history"]]  # after the ALS epochs kept
    assert len(epochs) == 2 + 4 and epochs == list(range(epochs[0], epochs[0] + 6))
    assert all(h["noise_precision"] > 0 for h in metadata["posterior_history"])


# ------------------------------------------------------------------------- strong generalization
def test_strong_generalization_folds_in_held_out_users(tmp_path: Path) -> None:
    cfg = compose_cfg("split=strong", "split.test_users=0.2", "eval.every=0", "checkpoint.every=0")
    result = pipeline.run(cfg, tmp_path / "run")
    prepared = pipeline.prepare_data(validate(cfg))
    assert prepared.fold_in is not None and prepared.validation is None
    held_out = np.flatnonzero(np.diff(prepared.test.matrix.indptr) > 0)
    assert np.diff(prepared.train.matrix.indptr)[held_out].sum() == 0  # never seen in training
    assert result.metrics["n_users_evaluated"] == held_out.size
    model = ALS.load(tmp_path / "run" / "model.npz")
    # brute force: fold the held-out users in, rank every item except their fold-in history
    rows = prepared.fold_in.matrix[held_out]
    users = model.fold_in(rows).astype(np.float64)
    scores = users @ model.item_embeddings().astype(np.float64).T
    scores[rows.toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    test = prepared.test.matrix[held_out]
    recall = np.mean(
        [
            len(set(top[r].tolist()) & set(test.indices[test.indptr[r] : test.indptr[r + 1]]))
            / (test.indptr[r + 1] - test.indptr[r])
            for r in range(held_out.size)
        ]
    )
    assert result.metrics["recall@10"] == pytest.approx(recall, abs=1e-6)
