"""nprobe above the number of IVF lists is refused at search time, as at build time: a value
clamped silently would pass a mistyped setting off as a tuned one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.index import build_index, file_sha256, load_index, sidecar_path

RNG = np.random.default_rng(3)
ITEMS = RNG.standard_normal((400, 8)).astype(np.float32)
QUERIES = RNG.standard_normal((5, 8)).astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "kwargs", "nlist"),
    [
        ("ivf", {"nlist": 8, "nprobe": 2}, 8),
        ("ivf", {"nlist": 8, "nprobe": 2, "mips_to_l2": True}, 8),
        ("ivf", {"nlist": 6, "nprobe": 2, "shards": 2}, 6),
        ("factory", {"factory": "IVF8,Flat"}, 8),
        ("factory", {"factory": "IVF8,SQ8,RFlat"}, 8),
    ],
)
def test_nprobe_above_nlist_is_refused_naming_both(kind: str, kwargs: dict, nlist: int) -> None:
    index = build_index(ITEMS, kind, **kwargs)
    assert index.nlist == nlist
    exact = index.search(QUERIES, 5, nprobe=nlist)  # every list: allowed
    with pytest.raises(ValueError, match=f"nprobe={nlist + 1} is larger than nlist={nlist}"):
        index.search(QUERIES, 5, nprobe=nlist + 1)
    with pytest.raises(ValueError, match=f"nprobe={nlist * 4} is larger than nlist={nlist}"):
        index.set_search_params(nprobe=nlist * 4)
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        index.search(QUERIES, 5, nprobe=0)
    index.set_search_params(nprobe=nlist)
    np.testing.assert_array_equal(index.search(QUERIES, 5)[0], exact[0])


def test_indexes_without_lists_accept_any_nprobe() -> None:
    for kind in ("flat", "hnsw"):
        index = build_index(ITEMS, kind)
        assert index.nlist is None and index.max_nprobe is None
        assert index.search(QUERIES, 3, nprobe=1000)[0].shape == (5, 3)


def test_a_loaded_nprobe_above_nlist_is_refused_at_search(tmp_path: Path) -> None:
    path = tmp_path / "items.faiss"
    build_index(ITEMS, "ivf", nlist=8, nprobe=2).save(path)
    meta = json.loads(sidecar_path(path).read_text())
    meta["params"]["nprobe"] = 50
    meta["index_sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(meta))
    index = load_index(path)
    with pytest.raises(ValueError, match="nprobe=50 is larger than nlist=8"):
        index.search(QUERIES, 5)
