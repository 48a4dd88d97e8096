"""recsys.index save/load: round trips, the JSON sidecar, atomic writes and mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from recsys.index import (
    IndexMismatchError,
    build_index,
    build_index_from_model,
    file_sha256,
    load_index,
    read_sidecar,
    save_index,
    sidecar_path,
)

RNG = np.random.default_rng(11)
ITEMS = (RNG.standard_normal((300, 8)) * RNG.lognormal(0, 0.9, (300, 1))).astype(np.float32)
QUERIES = RNG.standard_normal((20, 8)).astype(np.float32)


class _Model:
    """Just what load_index reads from a model: embeddings, factors and the item id map."""

    def __init__(self, items: np.ndarray, item_ids=None) -> None:
        self.item_factors = items[:, :-1]
        self._emb = items
        self.item_ids = item_ids

    def item_embeddings(self) -> np.ndarray:
        return self._emb


@pytest.mark.parametrize(
    "kind, metric, kwargs",
    [
        ("flat", "ip", {}),
        ("ivf", "ip", {"nlist": 6, "nprobe": 3, "mips_to_l2": True}),
        ("ivf", "l2", {"nlist": 6, "nprobe": 2}),
        ("hnsw", "ip", {"hnsw_m": 8, "ef_construction": 30, "ef_search": 24}),
        ("flat", "cosine", {}),
    ],
)
def test_round_trip_gives_identical_results(tmp_path: Path, kind, metric, kwargs) -> None:
    ids_ext = np.array([f"i{j}" for j in range(len(ITEMS))])
    index = build_index(ITEMS, kind, metric, item_ids=ids_ext, **kwargs)
    before = index.search(QUERIES, 7)
    model_file = tmp_path / "model.npz"
    model_file.write_bytes(b"model bytes")
    path = tmp_path / "sub" / "items.faiss"
    side = save_index(index, path, model_path=model_file)
    assert side == tmp_path / "sub" / "items.faiss.json" == sidecar_path(path)
    # nothing but the two files: the temporary files were renamed into place
    assert sorted(p.name for p in path.parent.iterdir()) == ["items.faiss", "items.faiss.json"]

    meta = json.loads(side.read_text())
    assert meta["kind"] == kind and meta["metric"] == metric and meta["dim"] == 8
    assert meta["index_dim"] == 8 + int(index.mips_to_l2)
    assert meta["params"] == index.params and meta["n_items"] == 300
    assert meta["item_ids"][:2] == ["i0", "i1"] and meta["item_id_type"] == "str"
    assert meta["model_sha256"] == file_sha256(model_file) == _sha(b"model bytes")
    assert meta["faiss_version"] == faiss.__version__
    assert meta["index_sha256"] == file_sha256(path)

    loaded = load_index(
        path, item_vectors=ITEMS, item_ids=ids_ext, metric=metric, model_path=model_file
    )
    assert (loaded.kind, loaded.metric, loaded.params) == (kind, metric, index.params)
    assert loaded.mips_to_l2 == index.mips_to_l2 and loaded.max_norm == index.max_norm
    after = loaded.search(QUERIES, 7)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_integer_ids_and_model_checks(tmp_path: Path) -> None:
    model = _Model(ITEMS, item_ids=np.arange(1000, 1300))
    index = build_index_from_model(model, "flat")
    path = tmp_path / "items.faiss"
    index.save(path)
    assert read_sidecar(path)["item_id_type"] == "int"
    loaded = load_index(path, model=model)
    np.testing.assert_array_equal(loaded.item_ids, np.arange(1000, 1300))
    assert read_sidecar(path)["model_sha256"] is None

    # another dimension
    with pytest.raises(
        IndexMismatchError, match="dimension: index 8, the model's item embeddings 9"
    ):
        load_index(path, model=_Model(np.hstack([ITEMS, ITEMS[:, :1]]), np.arange(1000, 1300)))
    # another item set: same size, different ids (taken from the model by default)
    with pytest.raises(IndexMismatchError, match="item ids: 1 positions differ"):
        changed = np.arange(1000, 1300)
        changed[5] = 7
        load_index(path, model=_Model(ITEMS, changed))
    # another number of items
    with pytest.raises(IndexMismatchError, match="number of items: index 300"):
        load_index(path, model=_Model(ITEMS[:250], np.arange(250)))
    # another metric
    with pytest.raises(IndexMismatchError, match="metric: index 'ip', requested 'cosine'"):
        load_index(path, metric="cosine")
    with pytest.raises(IndexMismatchError, match="integers but the given ids are strings"):
        load_index(path, item_ids=np.array([str(i) for i in range(300)]))
    with pytest.raises(IndexMismatchError, match="Rebuild the index"):
        load_index(path, item_vectors=ITEMS[:, :5])


def test_model_hash_mismatch(tmp_path: Path) -> None:
    model_file = tmp_path / "model.npz"
    model_file.write_bytes(b"version 1")
    path = tmp_path / "items.faiss"
    save_index(build_index(ITEMS), path, model_path=model_file)
    load_index(path, model_path=model_file)
    model_file.write_bytes(b"version 2")
    with pytest.raises(IndexMismatchError, match="the model changed since the index"):
        load_index(path, model_path=model_file)
    assert load_index(path, model_path=model_file, verify_model_hash=False).n_items == 300


def test_index_and_sidecar_must_belong_together(tmp_path: Path) -> None:
    a, b = tmp_path / "a.faiss", tmp_path / "b.faiss"
    save_index(build_index(ITEMS), a)
    save_index(build_index(ITEMS[:100]), b)
    b.replace(a)  # a.faiss now holds b's index but keeps a's sidecar
    with pytest.raises(IndexMismatchError, match="does not match its sidecar"):
        load_index(a)
    c = tmp_path / "c.faiss"
    save_index(build_index(ITEMS), c)
    sidecar_path(c).unlink()
    with pytest.raises(FileNotFoundError, match=r"c\.faiss\.json not found"):
        load_index(c)
    with pytest.raises(FileNotFoundError, match="index file"):
        load_index(tmp_path / "missing.faiss")


def test_failed_write_keeps_the_old_files(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "items.faiss"
    save_index(build_index(ITEMS), path)
    old_index, old_side = path.read_bytes(), sidecar_path(path).read_bytes()

    def broken_write(index, filename):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_index(build_index(ITEMS[:50]), path)
    assert path.read_bytes() == old_index and sidecar_path(path).read_bytes() == old_side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.faiss", "items.faiss.json"]
    monkeypatch.undo()
    assert load_index(path).n_items == 300


def test_overwrite_and_gpu_request_on_load(tmp_path: Path) -> None:
    path = tmp_path / "items.faiss"
    save_index(build_index(ITEMS), path)
    save_index(build_index(ITEMS[:100], "hnsw", hnsw_m=8), path)
    loaded = load_index(path, device="auto")
    assert loaded.kind == "hnsw" and loaded.n_items == 100 and loaded.device == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        load_index(path, device="tpu")
