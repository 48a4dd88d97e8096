"""Sharded item indexes (faiss IndexShards, successive ids): same results as one index, filtering,
save/load, and IVF recall."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from recsys.index import (
    IndexMismatchError,
    ItemIndex,
    build_index,
    faiss_gpu_count,
    load_index,
    read_sidecar,
    sidecar_path,
)
from recsys.index.shards import combine_shards, shard_bounds
from recsys.retrieval import CandidateGenerator

RNG = np.random.default_rng(5)
N_ITEMS, DIM = 301, 12  # 301 = 151 + 150 (S=2) = 101 + 100 + 100 (S=3)
ITEMS = (RNG.standard_normal((N_ITEMS, DIM)) * RNG.lognormal(0, 0.8, (N_ITEMS, 1))).astype(
    np.float32
)
QUERIES = RNG.standard_normal((40, DIM)).astype(np.float32)
EXACT = QUERIES.astype(np.float64) @ ITEMS.astype(np.float64).T  # the independent reference


def brute_topk(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    s = scores.copy()
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def manual_shards(items: np.ndarray, sizes: list[int]) -> ItemIndex:
    """A flat IP ItemIndex over hand-made, very uneven shards."""
    parts, start = [], 0
    for size in sizes:
        part = faiss.IndexFlatIP(items.shape[1])
        part.add(items[start : start + size])
        parts.append(part)
        start += size
    return ItemIndex(combine_shards(parts), kind="flat", metric="ip", dim=items.shape[1])


def test_shard_bounds_are_contiguous_and_balanced() -> None:
    assert shard_bounds(301, 3).tolist() == [0, 101, 201, 301]
    assert shard_bounds(10, 4).tolist() == [0, 3, 6, 8, 10]
    assert shard_bounds(5, 1).tolist() == [0, 5]


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_sharded_flat_equals_single_flat(shards: int, metric: str) -> None:
    single = build_index(ITEMS, "flat", metric)
    sharded = build_index(ITEMS, "flat", metric, shards=shards)
    assert sharded.shards == shards and sharded.exact
    assert sharded.shard_sizes == np.diff(shard_bounds(N_ITEMS, shards)).tolist()
    assert sum(sharded.shard_sizes) == sharded.n_items == N_ITEMS
    for k in (1, 10, 160):  # 160 > every shard: the merge has to take from several
        want_ids, want_scores = single.search(QUERIES, k)
        ids, scores = sharded.search(QUERIES, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    if metric == "ip":
        np.testing.assert_array_equal(sharded.search(QUERIES, 10)[0], brute_topk(EXACT, 10))


@pytest.mark.parametrize("sizes", [[7, 250, 44], [150, 151], [1, 1, 299]])
def test_uneven_hand_made_shards_equal_brute_force(sizes: list[int]) -> None:
    index = manual_shards(ITEMS, sizes)
    assert index.shard_sizes == sizes
    for k in (5, 60):
        ids, scores = index.search(QUERIES, k)
        np.testing.assert_array_equal(ids, brute_topk(EXACT, k))
        np.testing.assert_allclose(
            scores, np.take_along_axis(EXACT, ids, axis=1), rtol=1e-5, atol=1e-5
        )
    # filtered: the per-shard selectors must use local ids
    allowed = np.zeros(N_ITEMS, bool)
    allowed[RNG.choice(N_ITEMS, 90, replace=False)] = True
    allowed[0] = True  # the single-item shard of [1, 1, 299]
    ids, scores = index.search(QUERIES, 30, allowed=allowed)
    np.testing.assert_array_equal(ids, brute_topk(EXACT, 30, allowed))
    assert allowed[ids].all() and np.isfinite(scores).all()


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_filtered_search_never_returns_denied_items(shards: int) -> None:
    index = build_index(ITEMS, "flat", "ip", shards=shards)
    allowed = np.ones(N_ITEMS, bool)
    allowed[::3] = False
    allowed[101:201] = False  # the whole middle shard for S=3
    ids, scores = index.search(QUERIES, 25, allowed=allowed)
    np.testing.assert_array_equal(ids, brute_topk(EXACT, 25, allowed))
    assert (ids >= 0).all() and allowed[ids].all()
    # fewer allowed items than k: -1 / -inf padding at the end only
    few = np.zeros(N_ITEMS, bool)
    few[[3, 160, 290]] = True
    ids, scores = index.search(QUERIES[:4], 5, allowed=few)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert set(ids[:, :3].ravel().tolist()) == {3, 160, 290}


# ----------------------------------------------------------------------------- candidates
@pytest.fixture(scope="module")
def als_model(small_als):
    return small_als(0.08)


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_candidates_equal_model_recommend(als_model, shards: int) -> None:
    model, matrix = als_model
    index = build_index(model.item_embeddings(), "flat", "ip", shards=shards)
    # exact_below=0: always search the (sharded) index, never the exhaustive shortcut
    gen = CandidateGenerator(model, index, matrix, exact_below=0)
    users = np.arange(matrix.shape[0])
    cases = [
        ({}, {}),
        ({"excluded_items": [0, 1, 2, 50, 249]}, {"filter_items": [0, 1, 2, 50, 249]}),
        ({"allowed_items": np.arange(0, 250, 2)}, {"items": np.arange(0, 250, 2)}),
    ]
    for ours, theirs in cases:
        ids, scores = gen.candidates(users, 15, **ours)
        assert gen.last_exhaustive_rows == 0
        want_ids, want_scores = model.recommend(users, matrix[users], 15, **theirs)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("ivf", {"nlist": 4, "nprobe": 1}),
        ("hnsw", {"hnsw_m": 4, "ef_search": 4, "ef_construction": 8}),
        ("factory", {"factory": "IVF4,Flat", "nprobe": 1}),
    ],
)
def test_sharded_approximate_candidates_keep_the_filtering_guarantees(als_model, kind, kwargs):
    model, matrix = als_model
    n_items = matrix.shape[1]
    index = build_index(model.item_embeddings(), kind, "ip", shards=3, **kwargs)
    gen = CandidateGenerator(model, index, matrix, exact_below=0)
    users = np.arange(matrix.shape[0])
    excluded = np.arange(0, n_items, 5)
    ids, scores = gen.candidates(users, 20, excluded_items=excluded)
    assert ids.shape == (len(users), 20) and (ids >= 0).all() and np.isfinite(scores).all()
    assert not np.isin(ids, excluded).any()
    seen = matrix[users].toarray() > 0
    assert not np.take_along_axis(seen, ids, axis=1).any()
    assert all(len(set(row)) == 20 for row in ids.tolist())
    # scores are exact model scores, sorted
    want = (
        model.user_embeddings(users) @ model.item_embeddings().T
        + model.user_offsets(users)[:, None]
    )
    np.testing.assert_allclose(scores, np.take_along_axis(want, ids, axis=1), rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("flat", {}),
        ("ivf", {"nlist": 5, "nprobe": 2, "mips_to_l2": True}),
        ("hnsw", {"hnsw_m": 8, "ef_construction": 30, "ef_search": 24}),
    ],
)
def test_sharded_save_load_round_trip(tmp_path: Path, kind: str, kwargs: dict) -> None:
    ids_ext = np.array([f"item{j}" for j in range(N_ITEMS)])
    index = build_index(ITEMS, kind, "ip", shards=3, item_ids=ids_ext, **kwargs)
    path = tmp_path / "items.faiss"
    index.save(path)
    meta = read_sidecar(path)
    assert meta["shards"] == 3 and meta["shard_sizes"] == [101, 100, 100]
    assert len(meta["shard_bytes"]) == 3 and sum(meta["shard_bytes"]) == path.stat().st_size
    loaded = load_index(path, item_vectors=ITEMS, item_ids=ids_ext)
    assert loaded.shards == 3 and loaded.shard_sizes == [101, 100, 100]
    assert loaded.kind == kind and loaded.params == index.params
    allowed = np.arange(N_ITEMS) % 4 != 1
    for mask in (None, allowed):
        want = index.search(QUERIES, 12, allowed=mask)
        got = loaded.search(QUERIES, 12, allowed=mask)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_plain_index_sidecar_records_one_shard_and_old_sidecars_still_load(tmp_path: Path) -> None:
    index = build_index(ITEMS, "flat", "ip")
    path = tmp_path / "items.faiss"
    index.save(path)
    meta = read_sidecar(path)
    assert meta["shards"] == 1 and meta["shard_sizes"] == [N_ITEMS]
    for key in ("shards", "shard_sizes", "shard_bytes"):  # a sidecar written before sharding
        del meta[key]
    sidecar_path(path).write_text(json.dumps(meta))
    loaded = load_index(path, item_vectors=ITEMS)
    assert loaded.shards == 1
    np.testing.assert_array_equal(loaded.search(QUERIES, 5)[0], index.search(QUERIES, 5)[0])


def test_sharded_sidecar_that_does_not_fit_the_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "items.faiss"
    build_index(ITEMS, "flat", "ip", shards=2).save(path)
    meta = read_sidecar(path)
    meta["shard_bytes"] = [meta["shard_bytes"][0] + 8, meta["shard_bytes"][1] - 8]
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IndexMismatchError, match=r"shard [01] of .*re-export"):
        load_index(path)
    meta["shards"] = 3
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IndexMismatchError, match="describes 3 shards"):
        load_index(path)


# ----------------------------------------------------------------------------- IVF recall
def test_sharded_ivf_recall() -> None:
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((30, 16)) * 3
    items = (centers[rng.integers(0, 30, 3000)] + rng.standard_normal((3000, 16))).astype(
        np.float32
    )
    queries = rng.standard_normal((100, 16)).astype(np.float32)
    truth = brute_topk(queries.astype(np.float64) @ items.astype(np.float64).T, 10)
    index = build_index(items, "ivf", "ip", shards=3, nlist=20, nprobe=6, seed=0)
    assert index.params["nlist"] == 20 and index.shards == 3

    def recall(ids: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))

    assert recall(index.search(queries, 10)[0]) >= 0.9
    # probing every list of every shard is exhaustive: exactly the true top-10
    np.testing.assert_array_equal(index.search(queries, 10, nprobe=20)[0], truth)
    assert recall(index.search(queries, 10, nprobe=1)[0]) < recall(index.search(queries, 10)[0])


def test_shard_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"shards must be in \[1, n_items=301\], got 0"):
        build_index(ITEMS, "flat", "ip", shards=0)
    with pytest.raises(ValueError, match=r"shards must be in \[1, n_items=301\], got 302"):
        build_index(ITEMS, "flat", "ip", shards=302)
    with pytest.raises(ValueError, match=r"nlist must be in \[1, the smallest shard \(100 items\)"):
        build_index(ITEMS, "ivf", "ip", shards=3, nlist=101)
    unshifted = faiss.IndexShards(DIM, False, False)
    part = faiss.IndexFlatIP(DIM)
    part.add(ITEMS)
    unshifted.add_shard(part)
    with pytest.raises(IndexMismatchError, match="successive ids"):
        ItemIndex(unshifted, kind="flat", metric="ip", dim=DIM)


@pytest.mark.cuda
@pytest.mark.skipif(faiss_gpu_count() == 0, reason="needs faiss-gpu and a CUDA device")
def test_sharded_index_on_gpu_equals_cpu(tmp_path: Path) -> None:
    cpu = build_index(ITEMS, "flat", "ip", shards=3)
    gpu = build_index(ITEMS, "flat", "ip", shards=3, device="gpu")
    assert gpu.device == "gpu" and gpu.shards == 3
    np.testing.assert_array_equal(gpu.search(QUERIES, 10)[0], cpu.search(QUERIES, 10)[0])
    allowed = np.arange(N_ITEMS) % 2 == 0
    ids, _ = gpu.search(QUERIES, 10, allowed=allowed)
    assert allowed[ids[ids >= 0]].all()
    gpu.save(tmp_path / "items.faiss")
    loaded = load_index(tmp_path / "items.faiss", item_vectors=ITEMS)
    np.testing.assert_array_equal(loaded.search(QUERIES, 10)[0], cpu.search(QUERIES, 10)[0])


# ----------------------------------------------------------------------------- configuration
def test_index_shards_config_and_pipeline_export(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from recsys.config import ConfigError, IndexConfig
    from recsys.pipeline import export_index

    with pytest.raises(ConfigError, match=r"index.shards=0: must be an integer >= 1"):
        IndexConfig(shards=0)

    class Model:
        item_ids = np.arange(N_ITEMS) * 10

        def item_embeddings(self) -> np.ndarray:
            return ITEMS

    conf = SimpleNamespace(index=IndexConfig(type="flat", shards=3), seed=0)
    info = export_index(Model(), conf, tmp_path / "items.faiss")
    assert info["shards"] == 3 and read_sidecar(tmp_path / "items.faiss")["shards"] == 3
    loaded = load_index(tmp_path / "items.faiss", model=Model())
    np.testing.assert_array_equal(loaded.search(QUERIES, 10)[0], brute_topk(EXACT, 10))
