"""recsys.index: building and searching Flat / IVF / HNSW / factory indexes against brute force."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recsys.index import (
    DEFAULT_MIPS_TO_L2,
    IndexMismatchError,
    ItemIndex,
    build_index,
    build_index_from_model,
    default_nlist,
    default_nprobe,
    faiss_gpu_count,
)
from recsys.index.vectors import allowed_mask, mips_augment_items, normalize_rows


def als_like(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Vectors with log-normal norms (as ALS factors have) in float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x *= np.exp(0.9 * rng.standard_normal((n, 1))) / np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def brute_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by descending score (float64 reference)."""
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(scores, ids, axis=1)


ITEMS = als_like(600, 12, seed=1)
QUERIES = als_like(40, 12, seed=2)
IP = QUERIES.astype(np.float64) @ ITEMS.astype(np.float64).T


@pytest.mark.parametrize("mips", [False, True])
def test_flat_ip_equals_brute_force(mips: bool) -> None:
    index = build_index(ITEMS, "flat", "ip", mips_to_l2=mips)
    assert index.exact and index.mips_to_l2 == mips
    ids, scores = index.search(QUERIES, 15)
    want_ids, want_scores = brute_top_k(IP, 15)
    np.testing.assert_array_equal(ids, want_ids)
    # the MIPS-to-L2 score is recovered from an L2 distance: looser, but still close
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4 if mips else 1e-5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32


def test_cosine_and_l2_equal_brute_force() -> None:
    cos = normalize_rows(QUERIES).astype(np.float64) @ normalize_rows(ITEMS).astype(np.float64).T
    ids, scores = build_index(ITEMS, "flat", "cosine").search(QUERIES, 10)
    want_ids, want = brute_top_k(cos, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert scores.max() <= 1 + 1e-5

    d2 = ((QUERIES[:, None, :].astype(np.float64) - ITEMS[None].astype(np.float64)) ** 2).sum(-1)
    ids, scores = build_index(ITEMS, "flat", "l2").search(QUERIES, 10)
    want_ids, want = brute_top_k(-d2, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-4)  # minus squared distance


def test_mips_augmentation_makes_l2_order_equal_ip_order() -> None:
    aug, max_norm = mips_augment_items(ITEMS)
    np.testing.assert_allclose(np.linalg.norm(aug, axis=1), max_norm, rtol=1e-5)
    q = np.hstack([QUERIES, np.zeros((len(QUERIES), 1), np.float32)]).astype(np.float64)
    d2 = ((q[:, None, :] - aug[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(d2, (q**2).sum(1)[:, None] + max_norm**2 - 2 * IP, atol=1e-3)


@pytest.mark.parametrize("mips", [False, True])
def test_ivf_probing_every_list_is_exact(mips: bool) -> None:
    index = build_index(ITEMS, "ivf", "ip", nlist=8, nprobe=2, mips_to_l2=mips)
    assert index.params == {"nlist": 8, "nprobe": 2}
    ids, scores = index.search(QUERIES, 10, nprobe=8)
    want_ids, want_scores = brute_top_k(IP, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)
    # fewer probes: approximate, but every returned score is the true inner product
    ids, scores = index.search(QUERIES, 10)
    ok = ids >= 0
    np.testing.assert_allclose(
        scores[ok], np.take_along_axis(IP, np.where(ok, ids, 0), 1)[ok], rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("mips", [False, True])
def test_refined_ivf_factory_honours_nprobe_and_k_factor(mips: bool) -> None:
    """An "IVF..,SQ8,RFlat" index passes nprobe through the refine wrapper to its IVF."""
    index = build_index(ITEMS, "factory", "ip", factory="IVF8,SQ4,RFlat", mips_to_l2=mips)
    want_ids, want_scores = brute_top_k(IP, 10)
    # every list probed and every item re-scored exactly: the exact top-k
    index.set_search_params(nprobe=8, k_factor=len(ITEMS) / 10)
    ids, scores = index.search(QUERIES, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)
    # one list probed: some true neighbours are missed (before the fix nprobe was ignored)
    ids1, _ = index.search(QUERIES, 10, nprobe=1)
    assert not np.array_equal(ids1, want_ids)
    with pytest.raises(ValueError, match="k_factor must be >= 1"):
        index.set_search_params(k_factor=0.5)


def test_hnsw_recall_and_exact_scores() -> None:
    index = build_index(ITEMS, "hnsw", "ip", hnsw_m=16, ef_construction=80, ef_search=64)
    assert index.params == {"M": 16, "ef_construction": 80, "ef_search": 64}
    ids, scores = index.search(QUERIES, 10, ef_search=200)
    want_ids, _ = brute_top_k(IP, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(ids, want_ids, strict=True)])
    assert recall >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(IP, ids, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("flat", {}),
        ("ivf", {"nlist": 8, "nprobe": 3}),
        ("ivf", {"nlist": 8, "nprobe": 3, "mips_to_l2": True}),
        ("hnsw", {"hnsw_m": 8, "ef_construction": 40}),
        ("factory", {"factory": "IVF8,SQ8", "nprobe": 4}),
    ],
)
def test_allowed_mask_is_never_violated(kind: str, kwargs: dict) -> None:
    index = build_index(ITEMS, kind, "ip", **kwargs)
    rng = np.random.default_rng(3)
    mask = allowed_mask(len(ITEMS), excluded_items=rng.choice(len(ITEMS), 450, replace=False))
    # also deny every query's exact top-3, which an unfiltered search would return first
    mask[brute_top_k(IP, 3)[0].ravel()] = False
    ids, scores = index.search(QUERIES, 20, allowed=mask)
    got = ids[ids >= 0]
    assert got.size > 0 and mask[got].all()
    # -1 padding only at the end of a row, with -inf scores
    for row_ids, row_scores in zip(ids, scores, strict=True):
        n = int((row_ids >= 0).sum())
        assert (row_ids[:n] >= 0).all() and (row_ids[n:] == -1).all()
        assert np.isneginf(row_scores[n:]).all() and np.isfinite(row_scores[:n]).all()
    if kind == "flat":  # exact: the filtered top-k of the brute force
        ref = np.where(mask[None, :], IP, -np.inf)
        np.testing.assert_array_equal(ids, brute_top_k(ref, 20)[0])


def test_selector_support_is_detected() -> None:
    assert build_index(ITEMS, "flat").supports_selectors
    assert build_index(ITEMS, "hnsw", hnsw_m=8).supports_selectors
    assert build_index(ITEMS, "factory", factory="IVF4,Flat").supports_selectors


def test_unsupported_selectors_fall_back_to_post_filtering(monkeypatch) -> None:
    index = build_index(ITEMS, "flat")
    monkeypatch.setattr(ItemIndex, "supports_selectors", property(lambda self: False))
    mask = np.ones(len(ITEMS), dtype=bool)
    top = brute_top_k(IP, 5)[0]
    mask[top.ravel()] = False
    ids, _ = index.search(QUERIES, 10, allowed=mask)
    # no selector: the unfiltered top-10 with disallowed ids removed, -1 padded at the end
    unfiltered = brute_top_k(IP, 10)[0]
    for got, top in zip(ids, unfiltered, strict=True):
        keep = top[mask[top]]
        np.testing.assert_array_equal(got[: len(keep)], keep)
        assert (got[len(keep) :] == -1).all()
    assert (ids == -1).any()


def test_item_ids_and_repr() -> None:
    ext = np.array([f"item-{i}" for i in range(len(ITEMS))])
    index = build_index(ITEMS, "flat", item_ids=ext)
    assert index.item_ids[7] == "item-7"
    assert "kind='flat'" in repr(index)
    with pytest.raises(ValueError, match="duplicates"):
        build_index(ITEMS, item_ids=np.zeros(len(ITEMS), dtype=np.int64))
    with pytest.raises(ValueError, match="1-D array of 600"):
        build_index(ITEMS, item_ids=np.arange(3))


def test_defaults() -> None:
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(1000) == 25  # capped so each list has ~39 training points
    assert default_nlist(10) == 1
    assert default_nprobe(4000) == 250 and default_nprobe(3) == 1
    assert build_index(ITEMS, "ivf").mips_to_l2 is DEFAULT_MIPS_TO_L2["ivf"]
    assert build_index(ITEMS, "hnsw", hnsw_m=8).mips_to_l2 is DEFAULT_MIPS_TO_L2["hnsw"]
    assert build_index(ITEMS, "flat").mips_to_l2 is False
    assert build_index(ITEMS, "ivf", "cosine").mips_to_l2 is False


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        build_index(ITEMS, "annoy")
    with pytest.raises(ValueError, match="metric must be one of"):
        build_index(ITEMS, "flat", "dot")
    with pytest.raises(ValueError, match="mips_to_l2 applies to metric 'ip' only"):
        build_index(ITEMS, "flat", "cosine", mips_to_l2=True)
    with pytest.raises(ValueError, match="needs a Faiss factory string"):
        build_index(ITEMS, "factory")
    with pytest.raises(ValueError, match="cannot build factory string"):
        build_index(ITEMS, "factory", factory="NotAnIndex")
    with pytest.raises(ValueError, match="nlist must be in"):
        build_index(ITEMS, "ivf", nlist=10_000)
    bad = ITEMS.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 rows"):
        build_index(bad)
    with pytest.raises(ValueError, match="2-D"):
        build_index(ITEMS[0])
    index = build_index(ITEMS)
    with pytest.raises(IndexMismatchError, match="dimension 5 but the index was built for 12"):
        index.search(QUERIES[:, :5], 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 600\]"):
        index.search(QUERIES, 0)
    with pytest.raises(ValueError, match="allowed must be a boolean mask"):
        index.search(QUERIES, 3, allowed=np.ones(5, bool))
    with pytest.raises(ValueError, match="outside"):
        allowed_mask(len(ITEMS), excluded_items=[600])


def test_gpu_request_without_gpu_stays_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    if faiss_gpu_count() > 0:
        pytest.skip("this machine has a Faiss GPU")
    with caplog.at_level(logging.WARNING, logger="recsys.index"):
        index = build_index(ITEMS, "flat", device="gpu")
    assert index.device == "cpu" and "sees no GPU" in caplog.text
    assert index.search(QUERIES, 3)[0].shape == (40, 3)


def test_hnsw_stays_on_cpu_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="recsys.index"):
        index = build_index(ITEMS, "hnsw", hnsw_m=8, device="gpu")
    assert index.device == "cpu"
    assert "HNSW indexes have no GPU implementation" in caplog.text


@pytest.mark.cuda
@pytest.mark.skipif(faiss_gpu_count() == 0, reason="needs faiss-gpu and a CUDA device")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_index_matches_cpu_and_post_filters(kind: str) -> None:
    kwargs = {"nlist": 8, "nprobe": 8} if kind == "ivf" else {}
    cpu = build_index(ITEMS, kind, **kwargs)
    gpu = build_index(ITEMS, kind, device="gpu", **kwargs)
    assert gpu.device == "gpu" and not gpu.supports_selectors
    np.testing.assert_array_equal(gpu.search(QUERIES, 10)[0], cpu.search(QUERIES, 10)[0])
    mask = np.ones(len(ITEMS), bool)
    mask[brute_top_k(IP, 3)[0].ravel()] = False
    ids, _ = gpu.search(QUERIES, 10, allowed=mask)
    assert mask[ids[ids >= 0]].all()
    assert gpu.to_cpu().device == "cpu"


class _TinyModel:
    """The model interface the index needs: embeddings with the item bias folded in."""

    def __init__(self) -> None:
        rng = np.random.default_rng(5)
        self.item_factors = rng.standard_normal((50, 6)).astype(np.float32)
        self.item_bias = rng.standard_normal(50).astype(np.float32)
        self.item_ids = np.arange(100, 150)

    def item_embeddings(self) -> np.ndarray:
        return np.hstack([self.item_factors, self.item_bias[:, None]])


def test_build_from_model_uses_embeddings_or_factors() -> None:
    model = _TinyModel()
    ip = build_index_from_model(model, "flat")
    assert (ip.dim, ip.vectors, ip.metric) == (7, "embeddings", "ip")
    np.testing.assert_array_equal(ip.item_ids, model.item_ids)
    cos = build_index_from_model(model, "flat", "cosine")
    assert (cos.dim, cos.vectors) == (6, "factors")
    q = model.item_factors[:3]
    want = normalize_rows(q) @ normalize_rows(model.item_factors).T
    np.testing.assert_array_equal(cos.search(q, 5)[0], brute_top_k(want, 5)[0])
