"""recsys.index.benchmark and scripts/benchmark_index.py: catalog, recall, tables, smoke run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from recsys.index.benchmark import (
    BenchRow,
    markdown_table,
    operating_points,
    recall_at_k,
    synthetic_catalog,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_index.py"


def test_synthetic_catalog_is_als_like_and_seeded() -> None:
    items, queries = synthetic_catalog(10_000, 32, n_queries=300, seed=3)
    assert items.shape == (10_000, 32) and queries.shape == (300, 32)
    assert items.dtype == np.float32 and np.isfinite(items).all()
    log_norms = np.log(np.linalg.norm(items, axis=1))
    assert 0.8 < log_norms.std() < 1.0  # log-normal norms, log-std 0.9 as in Gowalla ALS
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    mean_dir = unit.mean(0) / np.linalg.norm(unit.mean(0))
    assert 0.35 < np.median(unit @ mean_dir) < 0.55  # the shared "popularity" direction
    again, _ = synthetic_catalog(10_000, 32, n_queries=300, seed=3)
    np.testing.assert_array_equal(items, again)
    assert not np.array_equal(items, synthetic_catalog(10_000, 32, n_queries=300, seed=4)[0])


def test_recall_at_k_by_hand() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 4 + 4 / 4) / 2)


def test_operating_points_and_table() -> None:
    rows = [
        BenchRow("exact", False, "", 0, 1.0, 100.0, 1.0, 0.1),
        BenchRow("ivf", True, "nprobe", 8, 0.90, 5000.0, 50.0, 2.0),
        BenchRow("ivf", True, "nprobe", 16, 0.96, 3000.0, 30.0, 2.0),
        BenchRow("ivf", True, "nprobe", 32, 0.99, 1500.0, 15.0, 2.0),
        BenchRow("hnsw", False, "efSearch", 16, 0.50, 9000.0, 90.0, 5.0),
    ]
    points = operating_points(rows, 0.95)
    assert points["ivf +mips2l2"].value == 16 and points["hnsw"] is None
    table = markdown_table(rows, 20)
    assert "| ivf | yes | nprobe | 16 | 0.9600 | 3,000 | 30.0x | 2.0 |" in table
    assert "- ivf +mips2l2: nprobe=16 gives recall@20 0.9600 at 3,000 QPS (30.0x exact)" in table
    assert "- hnsw: no setting reached recall@20 >= 0.95" in table


@pytest.mark.slow
def test_smoke_run_writes_table_json_and_plot(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("benchmark_index", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert module.main(["--smoke", "--json", str(out_json), "--png", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "| exact | no | - | - | 1.0000 |" in text and "efSearch" in text and "nprobe" in text
    payload = json.loads(out_json.read_text())
    assert payload["meta"]["n_items"] == 5000 and payload["meta"]["faiss_threads"] == 1
    labels = {(r["index"], r["mips_to_l2"]) for r in payload["rows"]}
    assert labels == {
        ("exact", False),
        ("ivf", False),
        ("ivf", True),
        ("hnsw", False),
        ("hnsw", True),
    }
    assert all(0.0 <= r["recall"] <= 1.0 and r["qps"] > 0 for r in payload["rows"])
    # IVF probing more lists never loses recall (same index, growing nprobe)
    ivf = [r["recall"] for r in payload["rows"] if r["index"] == "ivf" and r["mips_to_l2"]]
    assert ivf == sorted(ivf)
    assert out_png.stat().st_size > 10_000
