"""recsys.pipeline.tracking: what the Tracker writes, read back with TensorBoard's own readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from recsys.pipeline.tracking import HPARAMS_RUN, Tracker, plain_hparams


def _accumulator(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _events(log_dir: Path) -> list:
    events = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        events.extend(EventFileLoader(str(path)).Load())
    return events


def test_scalars_histograms_and_metrics_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(7, 3, generator=gen), torch.randn(5, 3, generator=gen)
    bias = torch.arange(5, dtype=torch.float32)
    with Tracker(tmp_path / "tb") as tracker:
        for epoch in (1, 2, 3):
            tracker.log_epoch(
                {
                    "epoch": epoch,
                    "loss": 10.0 / epoch,
                    "observed": 6.0 / epoch,
                    "unobserved": 3.0 / epoch,
                    "regularization": 1.0 / epoch,
                    "seconds": 0.5,
                }
            )
            tracker.log_factors(epoch, users * epoch, items, user_bias=None, item_bias=bias)
        tracker.log_metrics({"recall@20": 0.25, "ndcg@20": 0.125, "note": "x"}, step=3)
    assert tracker.closed
    acc = _accumulator(tmp_path / "tb")
    tags = acc.Tags()
    for tag in ("loss/total", "loss/observed", "loss/unobserved", "loss/regularization"):
        assert tag in tags["scalars"]
    total = acc.Scalars("loss/total")
    assert [e.step for e in total] == [1, 2, 3]
    np.testing.assert_allclose([e.value for e in total], [10.0, 5.0, 10.0 / 3], rtol=1e-6)
    assert [e.value for e in acc.Scalars("validation/recall@20")] == [0.25]
    assert "validation/note" not in tags["scalars"]
    assert {"factors/user_norm", "factors/item_norm", "bias/item"} <= set(tags["histograms"])
    assert "bias/user" not in tags["histograms"]
    # the histogram of user norms at epoch 2 summarises exactly the norms of 2 * users
    hist = next(h for h in acc.Histograms("factors/user_norm") if h.step == 2).histogram_value
    norms = (users * 2).double().norm(dim=1)
    assert hist.num == 7
    assert hist.min == pytest.approx(float(norms.min()))
    assert hist.max == pytest.approx(float(norms.max()))
    assert hist.sum == pytest.approx(float(norms.sum()), rel=1e-6)


def test_hparams_session_in_fixed_run(tmp_path: Path) -> None:
    with Tracker(tmp_path / "tb") as tracker:
        tracker.log_hparams(
            {
                "als.n_factors": 8,
                "als.regularization": 0.1,
                "als.reg_exponent": None,
                "k": [10, 20],
            },
            {"recall@20": 0.3, "train_seconds": 1.5, "bad": float("nan")},
        )
    runs = [p.name for p in (tmp_path / "tb").iterdir() if p.is_dir()]
    assert runs == [HPARAMS_RUN]
    events = _events(tmp_path / "tb" / HPARAMS_RUN)
    plugin_values = [
        v
        for e in events
        for v in e.summary.value
        if v.metadata.plugin_data.plugin_name == "hparams"
    ]
    assert len(plugin_values) == 3  # experiment, session start, session end
    from tensorboard.plugins.hparams import plugin_data_pb2

    starts = []
    for value in plugin_values:
        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
        if data.HasField("session_start_info"):
            starts.append(data.session_start_info)
        if data.HasField("experiment"):
            metric_tags = {m.name.tag for m in data.experiment.metric_infos}
            assert metric_tags == {"hparam/recall@20", "hparam/train_seconds"}
    (start,) = starts
    assert start.hparams["als.n_factors"].number_value == 8
    assert start.hparams["als.regularization"].number_value == pytest.approx(0.1)
    assert start.hparams["als.reg_exponent"].string_value == "null"
    assert start.hparams["k"].string_value == "[10,20]"
    acc = _accumulator(tmp_path / "tb" / HPARAMS_RUN)
    assert acc.Scalars("hparam/recall@20")[0].value == pytest.approx(0.3)


def test_projector_caps_items_by_popularity_and_cleans_titles(tmp_path: Path) -> None:
    emb = np.arange(12, dtype=np.float32).reshape(6, 2)
    popularity = np.array([5, 60, 1, 30, 30, 2])
    titles = np.array(["a", "Toy\tStory (1995)", "c", "line\nbreak", "e", "f"])
    with Tracker(tmp_path / "tb", projector_max_items=3) as tracker:
        chosen = tracker.log_projector(
            emb, item_ids=np.array([10, 11, 12, 13, 14, 15]), titles=titles, popularity=popularity
        )
    np.testing.assert_array_equal(chosen, [1, 3, 4])
    config = (tmp_path / "tb" / "projector_config.pbtxt").read_text()
    assert "item_embeddings" in config
    (folder,) = [p for p in (tmp_path / "tb").rglob("metadata.tsv")]
    lines = folder.read_text().splitlines()
    assert lines == [
        "id\ttitle\tpopularity",
        "11\tToy Story (1995)\t60",
        "13\tline break\t30",
        "14\te\t30",
    ]
    tensors = np.loadtxt(folder.parent / "tensors.tsv", delimiter="\t")
    np.testing.assert_array_equal(tensors, emb[[1, 3, 4]])


def test_disabled_tracker_writes_nothing(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "tb", enabled=False)
    tracker.log_epoch({"epoch": 1, "loss": 1.0})
    tracker.log_factors(1, torch.ones(2, 2), torch.ones(2, 2))
    tracker.log_hparams({"a": 1}, {"m": 1.0})
    tracker.close()
    assert not (tmp_path / "tb").exists()


def test_plain_hparams_types() -> None:
    out = plain_hparams(
        {"i": np.int64(3), "f": np.float32(0.5), "b": True, "n": None, "inf": float("inf")}
    )
    assert out == {"i": 3, "f": 0.5, "b": True, "n": "null", "inf": "inf"}
    assert type(out["i"]) is int
