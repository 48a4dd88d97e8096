"""benchmarks/index.py and scripts/benchmark_index.py: catalog, recall, tables, smoke run."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.index import (
    CATALOG_PRESETS,
    BenchRow,
    _ivf_family,
    _set_speedups,
    _timed_search,
    pq_fastscan_m,
    recall_at_k,
    run_benchmark,
    synthetic_catalog,
)
from benchmarks.index_report import markdown_table, operating_points
from recsys.index import build_index

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_index.py"


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


def test_hkv64_preset_is_lighter_tailed() -> None:
    items, _ = synthetic_catalog(5000, 32, n_queries=10, seed=1, **CATALOG_PRESETS["hkv64"])
    log_norms = np.log(np.linalg.norm(items, axis=1))
    assert 0.4 < log_norms.std() < 0.52  # the default hkv model's 0.46 on Gowalla


def test_recall_at_k_by_hand() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 4 + 4 / 4) / 2)


def test_operating_points_and_table() -> None:
    rows = [
        BenchRow("exact", False, "", 0, 1.0, 100.0, 1.0, 0.1, {}, 50.0),
        BenchRow("ivf", True, "nprobe", 8, 0.90, 5000.0, 50.0, 2.0, {}, 2500.0),
        BenchRow("ivf", True, "nprobe", 16, 0.96, 3000.0, 30.0, 2.0, {}, 1500.0),
        BenchRow("ivf", True, "nprobe", 32, 0.99, 1500.0, 15.0, 2.0, {}, 750.0),
        BenchRow("ivf", False, "nprobe", 32, 0.97, 1000.0, 10.0, 2.0, {}, 500.0),
        BenchRow("hnsw", False, "efSearch", 16, 0.50, 9000.0, 90.0, 5.0, {}, 4500.0),
        BenchRow("hnsw", True, "efSearch", 16, 0.60, 9000.0, 90.0, 5.0, {}, 4500.0),
        BenchRow(
            "ivf-sq8-rflat", True, "nprobe", 8, 0.97, 1.0, 2.0, 3.0, {"nlist": 64, "k_factor": 4}
        ),
    ]
    points = operating_points(rows, 0.95)
    assert points["ivf +mips2l2"].value == 16 and points["hnsw"] is None
    assert points["ivf-sq8-rflat nlist=64 k_factor=4 +mips2l2"].speedup == 2.0
    table = markdown_table(rows, 20)
    assert "| ivf | yes | nprobe | 16 | 0.9600 | 3,000 | 1,500 | 30.0x | - | 2.0 |" in table
    assert (
        "- ivf +mips2l2: nprobe=16 gives recall@20 0.9600 at 30.0x exact (3,000 QPS, 1,500 per "
        "CPU s)" in table
    )
    assert "- hnsw: no setting reached recall@20 >= 0.95" in table
    assert "- ivf: MIPS-to-L2 (faster at recall >= 0.95)" in table
    assert "- hnsw: MIPS-to-L2 (higher best recall (0.6000 with, 0.5000 without" in table


def test_timed_search_repeats_until_min_seconds_and_takes_medians() -> None:
    class Sleepy:
        calls = 0

        def search(self, queries, k, **kw):
            Sleepy.calls += 1
            time.sleep(0.001 if Sleepy.calls > 1 else 0.3)  # one slow outlier first
            return np.zeros((len(queries), k), np.int64), None

    # wall-clock bounds are left out on purpose: on a loaded machine any sleep can take seconds
    t = _timed_search(Sleepy(), np.zeros((3, 2)), 4, 2, 1.0)
    assert t.ids.shape == (3, 4) and Sleepy.calls >= 2
    assert t.ndis == 0 and t.ref_wall is None  # no Faiss index searched, no reference
    Sleepy.calls = 1
    t = _timed_search(Sleepy(), np.zeros((3, 2)), 4, 3, 0.0, (Sleepy(), np.zeros((2, 2))))
    assert Sleepy.calls == 1 + 2 * 3  # every timed run is preceded by the reference search
    assert t.ref_wall > 0.0004  # per reference query: at least ~0.001 s / 2 queries


def test_pq_fastscan_m_divides_the_dimension() -> None:
    assert pq_fastscan_m(128) == 32 and pq_fastscan_m(129) == 43 and pq_fastscan_m(33) == 11
    assert pq_fastscan_m(7) == 1


@pytest.mark.parametrize("mips", [False, True])
def test_ivf_family_matches_build_index_and_brute_force(mips: bool) -> None:
    """The benchmark's IVF-Flat (shared quantizer) is build_index's IVF: same lists, same hits;
    the refined codes with every list probed and every item re-scored are exact."""
    rng = np.random.default_rng(0)
    items = (rng.standard_normal((800, 12)) * np.exp(rng.standard_normal((800, 1)))).astype("f4")
    queries = rng.standard_normal((30, 12)).astype(np.float32)
    want = np.argsort(-(queries.astype(np.float64) @ items.T.astype(np.float64)), axis=1)[:, :5]
    family = _ivf_family(
        items, nlist=8, mips=mips, codes=("Flat", "SQ8", "PQfs"), train_per_list=256, seed=0
    )
    reference = build_index(items, "ivf", "ip", nlist=8, mips_to_l2=mips, seed=0)
    for name, index, _ in family:
        assert index.mips_to_l2 == mips
        if name == "ivf":
            for nprobe in (1, 3):
                got, _ = index.search(queries, 5, nprobe=nprobe)
                ref, _ = reference.search(queries, 5, nprobe=nprobe)
                np.testing.assert_array_equal(got, ref)
        else:
            index.set_search_params(k_factor=len(items) / 5)
        got, _ = index.search(queries, 5, nprobe=8)
        np.testing.assert_array_equal(got, want)


def test_run_benchmark_rows_and_exact_reference() -> None:
    items, queries = synthetic_catalog(2000, 16, n_queries=50, seed=0)
    meta: dict = {}
    rows = run_benchmark(
        items,
        queries,
        k=5,
        nlists=(16,),
        nprobes=(1, 16),
        ivf_codes=("Flat", "SQ8"),
        k_factors=(2,),
        kinds=("ivf",),
        mips_variants=(True,),
        clock="cpu",
        paired=True,
        meta=meta,
    )
    assert [r.label for r in rows] == ["exact"] + ["ivf nlist=16 +mips2l2"] * 2 + [
        "ivf-sq8-rflat nlist=16 k_factor=2 +mips2l2"
    ] * 2
    assert rows[1].recall < rows[2].recall == 1.0  # every list probed: IVF-Flat is exact
    assert rows[2].extra["scanned"] == pytest.approx(1.0)  # ... and computes every distance
    assert 0 < rows[1].extra["scanned"] < 0.5
    assert len(meta["exact_cpu_qps_start_end"]) == 2 and meta["clock"] == "cpu"
    assert rows[0].cpu_qps == pytest.approx(max(meta["exact_cpu_qps_start_end"]), rel=0.01)
    assert rows[0].speedup == 1.0
    for r in rows[1:]:  # over the exact search interleaved with that setting's runs
        assert r.speedup == pytest.approx(r.cpu_qps / r.extra["exact_cpu_qps_paired"])
    with pytest.raises(ValueError, match="clock must be one of"):
        run_benchmark(items, queries, kinds=("ivf",), clock="sundial")


def test_speedups_are_over_the_batched_exact_search_of_all_queries() -> None:
    """Fake timings of a 1M-item HNSW run: 13,743 QPS against the batched exact search's 705
    (and 690 at the end) is 19.5x, on either clock; a paired row divides by its own interleaved
    batched exact throughput."""
    rows = [
        BenchRow("exact", False, "", 0, 1.0, 0.0, 0.0, 0.5, {}, 0.0),
        BenchRow("hnsw", False, "efSearch", 64, 0.9507, 13743.0, 0.0, 60.0, {}, 13743.0),
        BenchRow(
            "hnsw", False, "efSearch", 128, 0.97, 8000.0, 0.0, 60.0,
            {"exact_qps_paired": 640.0, "exact_cpu_qps_paired": 500.0}, 7000.0,
        ),
    ]  # fmt: skip
    meta: dict = {}
    _set_speedups(rows, [(705.0, 705.0), (690.0, 600.0)], "wall", meta)
    assert rows[0].qps == rows[0].cpu_qps == 705.0 and rows[0].speedup == 1.0
    assert rows[1].speedup == pytest.approx(13743 / 705) == pytest.approx(19.49, abs=0.01)
    assert rows[2].speedup == pytest.approx(8000 / 640)
    assert meta == {
        "clock": "wall",
        "exact_qps_start_end": [705.0, 690.0],
        "exact_cpu_qps_start_end": [705.0, 600.0],
    }
    _set_speedups(rows, [(705.0, 705.0), (690.0, 600.0)], "cpu", None)
    assert rows[1].speedup == pytest.approx(13743 / 705)
    assert rows[2].speedup == pytest.approx(7000 / 500)
    table = markdown_table(rows, k=20)
    assert "| speed-up vs batched exact (all queries) |" in table.splitlines()[0]
    assert "| 0.9507 | 13,743 | 13,743 | 19.5x |" in table


def test_paired_exact_search_is_the_batched_search_of_all_queries(monkeypatch) -> None:
    import benchmarks.index as index_module

    batches = []

    def spy(index, queries, k, repeats, min_seconds=0.0, reference=None, **kw):
        if reference is not None:
            batches.append(len(reference[1]))
        return _timed_search(index, queries, k, repeats, min_seconds, reference, **kw)

    monkeypatch.setattr(index_module, "_timed_search", spy)
    items, queries = synthetic_catalog(1000, 8, n_queries=30, seed=0)
    common = {
        "k": 5,
        "nlists": (8,),
        "nprobes": (1, 2),
        "kinds": ("ivf",),
        "mips_variants": (False,),
    }
    run_benchmark(items, queries, paired=True, **common)
    assert batches == [30, 30]  # every setting's exact reference: all 30 queries at once
    batches.clear()
    run_benchmark(items, queries, paired=False, **common)
    assert batches == []


@pytest.mark.slow
def test_smoke_run_writes_table_json_and_plot(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("benchmark_index", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert module.main(["--smoke", "--json", str(out_json), "--png", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "| exact | no | - | - | 1.0000 |" in text and "efSearch" in text and "nprobe" in text
    assert "MIPS-to-L2 or native IP, per variant:" in text
    payload = json.loads(out_json.read_text())
    assert payload["meta"]["n_items"] == 5000 and payload["meta"]["faiss_threads"] == 1
    labels = {(r["index"], r["mips_to_l2"]) for r in payload["rows"]}
    kinds = ("ivf", "ivf-sq8-rflat", "ivf-pqfs-rflat", "hnsw")
    assert labels == {("exact", False)} | {(kind, m) for kind in kinds for m in (False, True)}
    factories = {r["extra"].get("factory") for r in payload["rows"]} - {None}
    assert factories == {f"IVF128,{c},RFlat" for c in ("SQ8", "PQ8x4fs", "PQ11x4fs")}
    assert payload["meta"]["clock"] == "cpu" and len(payload["meta"]["load_average_start"]) == 3
    assert all(0.0 <= r["recall"] <= 1.0 and r["qps"] > 0 for r in payload["rows"])
    # IVF probing more lists never loses recall (same index, growing nprobe)
    ivf = [r["recall"] for r in payload["rows"] if r["index"] == "ivf" and r["mips_to_l2"]]
    assert ivf == sorted(ivf)
    assert out_png.stat().st_size > 10_000
