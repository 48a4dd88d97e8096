"""Blocked fused top-k against a brute-force per-user reference over float64 scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recsys.scoring.bf16 as bf16_mod
import recsys.scoring.selection as selection_mod
import recsys.scoring.topk as topk_mod
from recsys.scoring import block_rows, topk_items


def reference_topk(users, items, k, exclude=None, allowed=None):
    """Per user: sort the allowed, non-excluded items by (score desc, id asc); pad with -1."""
    scores = np.asarray(users, dtype=np.float64) @ np.asarray(items, dtype=np.float64).T
    dense_ex = None if exclude is None else exclude.toarray()
    out = []
    for u in range(scores.shape[0]):
        cand = [
            i
            for i in range(scores.shape[1])
            if (dense_ex is None or dense_ex[u, i] == 0) and (allowed is None or i in allowed)
        ]
        cand.sort(key=lambda i, u=u: (-scores[u, i], i))
        row = cand[:k]
        out.append(row + [-1] * (k - len(row)))
    return np.array(out, dtype=np.int64).reshape(scores.shape[0], k)


def integer_case(seed, n_users=None, n_items=None):
    """Small integer factors: float32 scores are exact and full of ties."""
    rng = np.random.default_rng(seed)
    nu = n_users or int(rng.integers(1, 25))
    ni = n_items or int(rng.integers(1, 60))
    d = int(rng.integers(1, 5))
    u = rng.integers(-2, 3, (nu, d)).astype(np.float32)
    v = rng.integers(-2, 3, (ni, d)).astype(np.float32)
    ex = sp.random(nu, ni, density=rng.uniform(0.0, 0.8), random_state=seed, format="csr")
    return rng, u, v, ex


@pytest.fixture(params=["plain", "two_stage", "two_stage_odd"])
def selection(request, monkeypatch):
    """Run each test through both top-k paths (the two-stage one forced on tiny catalogs)."""
    if request.param.startswith("two_stage"):
        widths = (5, 3) if request.param.endswith("odd") else (4, 2, 1)
        monkeypatch.setattr(selection_mod, "TWO_STAGE_MIN_ITEMS", 0)
        monkeypatch.setattr(selection_mod, "TWO_STAGE_WIDTHS", widths)
        monkeypatch.setattr(selection_mod, "TWO_STAGE_CHUNKS_PER_ITEM", 1)
    else:
        monkeypatch.setattr(selection_mod, "TWO_STAGE_MIN_ITEMS", 10**12)
    return request.param


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_with_ties_and_exclusion(seed, selection):
    rng, u, v, ex = integer_case(seed)
    k = int(rng.integers(1, v.shape[0] + 4))  # sometimes more than the items left
    ids, scores = topk_items(u, v, k, exclude=ex, block_size=int(rng.integers(1, 7)))
    expected = reference_topk(u, v, k, ex)
    np.testing.assert_array_equal(ids.numpy(), expected)
    full = u.astype(np.float64) @ v.T.astype(np.float64)
    for row in range(u.shape[0]):
        valid = expected[row] >= 0
        np.testing.assert_array_equal(scores[row, valid].numpy(), full[row, expected[row, valid]])
        assert torch.isneginf(scores[row, ~torch.from_numpy(valid)]).all()


@pytest.mark.parametrize("seed", range(6))
def test_exclusion_really_excludes(seed, selection):
    rng = np.random.default_rng(100 + seed)
    u = rng.normal(size=(30, 8)).astype(np.float32)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    ex = sp.random(30, 50, density=0.5, random_state=seed, format="csr")
    ids, _ = topk_items(u, v, 10, exclude=ex)
    for row in range(30):
        seen = set(ex[row].indices.tolist())
        got = set(ids[row].tolist()) - {-1}
        assert not got & seen
        # every unseen item appears when the list is long enough to hold them all
        if 50 - len(seen) <= 10:
            assert got == set(range(50)) - seen


@pytest.mark.parametrize("seed", range(4))
def test_allowed_items_mask_and_ids(seed, selection):
    rng, u, v, ex = integer_case(200 + seed, n_items=40)
    allowed = np.sort(rng.choice(40, size=15, replace=False))
    mask = np.zeros(40, dtype=bool)
    mask[allowed] = True
    expected = reference_topk(u, v, 7, ex, set(allowed.tolist()))
    by_ids = topk_items(u, v, 7, exclude=ex, allowed_items=allowed, block_size=3).ids
    by_mask = topk_items(u, v, 7, exclude=ex, allowed_items=torch.from_numpy(mask)).ids
    np.testing.assert_array_equal(by_ids.numpy(), expected)
    np.testing.assert_array_equal(by_mask.numpy(), expected)


def test_two_stage_default_path_on_a_larger_catalog():
    """The default CPU two-stage selection (no monkeypatching) against the reference, with ties."""
    rng = np.random.default_rng(7)
    u = rng.integers(-3, 4, (12, 5)).astype(np.float32)
    v = rng.integers(-3, 4, (5000, 5)).astype(np.float32)
    assert selection_mod.chunk_width(5000, 21, torch.device("cpu")) > 0
    ex = sp.random(12, 5000, density=0.3, random_state=1, format="csr")
    ids, _ = topk_items(u, v, 20, exclude=ex, block_size=5)
    scores = u.astype(np.float64) @ v.T.astype(np.float64)
    scores[ex.toarray() != 0] = -np.inf
    for row in range(12):  # lexsort: last key first, so score descending then id ascending
        expected = np.lexsort((np.arange(5000), -scores[row]))[:20]
        np.testing.assert_array_equal(ids[row].numpy(), expected)


def test_float_factors_match_float64_reference(selection):
    rng = np.random.default_rng(3)
    u = rng.normal(size=(40, 16))
    v = rng.normal(size=(70, 16))
    ex = sp.random(40, 70, density=0.2, random_state=3, format="csr")
    ids, scores = topk_items(torch.from_numpy(u), torch.from_numpy(v), 10, exclude=ex)
    np.testing.assert_array_equal(ids.numpy(), reference_topk(u, v, 10, ex))
    assert scores.dtype == torch.float32
    ref = np.take_along_axis(u @ v.T, ids.numpy(), axis=1)
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_user_offsets_shift_scores_not_ranking():
    rng, u, v, ex = integer_case(5, n_users=9, n_items=30)
    offsets = rng.normal(size=9).astype(np.float32)
    plain = topk_items(u, v, 5, exclude=ex)
    shifted = topk_items(u, v, 5, exclude=ex, user_offsets=offsets)
    np.testing.assert_array_equal(plain.ids.numpy(), shifted.ids.numpy())
    valid = plain.ids >= 0
    diff = (shifted.scores - plain.scores)[valid].numpy()
    want = np.broadcast_to(offsets[:, None], (9, 5))[valid.numpy()]
    np.testing.assert_allclose(diff, want, rtol=1e-5, atol=1e-6)


def test_memory_budget_bounds_the_block():
    assert block_rows(1000, memory_budget_bytes=8 * 1000 * 3) == 3
    assert block_rows(1000, memory_budget_bytes=1) == 1
    assert block_rows(10, memory_budget_bytes=10**12, max_rows=64) == 64
    _, u, v, ex = integer_case(11, n_users=20, n_items=30)
    tiny = topk_items(u, v, 6, exclude=ex, memory_budget_bytes=1)  # one user per block
    np.testing.assert_array_equal(tiny.ids.numpy(), reference_topk(u, v, 6, ex))


def test_edge_cases_and_errors():
    u = np.ones((3, 2), dtype=np.float32)
    v = np.ones((4, 2), dtype=np.float32)
    everything = sp.csr_matrix(np.ones((3, 4)))
    ids, scores = topk_items(u, v, 2, exclude=everything)
    assert (ids == -1).all() and torch.isneginf(scores).all()
    empty = topk_items(np.zeros((0, 2)), v, 3)
    assert empty.ids.shape == (0, 3)
    # all scores tie: the lowest ids win, in order
    np.testing.assert_array_equal(topk_items(u, v, 3).ids.numpy(), [[0, 1, 2]] * 3)
    with pytest.raises(ValueError, match="dimensions"):
        topk_items(u, np.ones((4, 3)), 2)
    with pytest.raises(ValueError, match="items"):
        topk_items(u, v, 2, exclude=sp.csr_matrix((3, 5)))
    with pytest.raises(ValueError, match="at least 1"):
        topk_items(u, v, 0)
    with pytest.raises(ValueError, match="outside"):
        topk_items(u, v, 2, allowed_items=np.array([0, 9]))


def test_unsorted_exclusion_matrix_is_not_modified():
    _, u, v, _ = integer_case(12, n_users=5, n_items=20)
    ex = sp.csr_matrix(
        (np.ones(4), np.array([7, 3, 3, 1]), np.array([0, 3, 3, 4, 4, 4])), shape=(5, 20)
    )
    ex.has_sorted_indices = False
    before = ex.indices.copy()
    ids, _ = topk_items(u, v, 20, exclude=ex)
    np.testing.assert_array_equal(ex.indices, before)
    assert not {3, 7} & set(ids[0].tolist())
    assert 1 not in ids[2].tolist()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    _, u, v, ex = integer_case(21, n_users=300, n_items=700)
    cpu = topk_items(u, v, 25, exclude=ex)
    gpu = topk_items(torch.from_numpy(u).cuda(), torch.from_numpy(v).cuda(), 25, exclude=ex)
    assert gpu.ids.device.type == "cuda"
    np.testing.assert_array_equal(gpu.ids.cpu().numpy(), cpu.ids.numpy())
    np.testing.assert_array_equal(gpu.scores.cpu().numpy(), cpu.scores.numpy())


# ---------------------------------------------------------------- bfloat16 candidates, exact ranks
@pytest.fixture
def tiny_candidates(monkeypatch):
    """Few bfloat16 candidates per user, so retries and the float32 fallback really run."""
    monkeypatch.setattr(bf16_mod, "BF16_CANDIDATES", 1)
    monkeypatch.setattr(bf16_mod, "BF16_CANDIDATES_PER_K", 1)
    monkeypatch.setattr(bf16_mod, "BF16_CANDIDATES_EXTRA", 0)
    calls = {"rows": 0}
    exact_block = topk_mod._exact_block

    def counting(users, *args, **kwargs):
        calls["rows"] += users.shape[0]
        return exact_block(users, *args, **kwargs)

    monkeypatch.setattr(topk_mod, "_exact_block", counting)
    return calls


@pytest.mark.parametrize("seed", range(6))
def test_bf16_path_matches_brute_force_with_ties(seed, tiny_candidates):
    rng, u, v, ex = integer_case(
        300 + seed, n_items=int(np.random.default_rng(seed).integers(5, 80))
    )
    k = int(rng.integers(1, 12))
    got = topk_items(u, v, k, exclude=ex, precision="bf16", block_size=int(rng.integers(1, 9)))
    np.testing.assert_array_equal(got.ids.numpy(), reference_topk(u, v, k, ex))


def test_bf16_path_falls_back_to_float32_when_unproven(tiny_candidates):
    rng = np.random.default_rng(5)
    u = rng.integers(-1, 2, (16, 2)).astype(np.float32)
    v = rng.integers(-1, 2, (400, 2)).astype(np.float32)  # 9 distinct vectors: huge ties
    got = topk_items(u, v, 5, precision="bf16")
    np.testing.assert_array_equal(got.ids.numpy(), reference_topk(u, v, 5))
    assert tiny_candidates["rows"] > 0  # some users needed the float32 product


@pytest.mark.parametrize("seed", range(3))
def test_bf16_path_equals_float32_path_on_float_factors(seed):
    rng = np.random.default_rng(40 + seed)
    d = 48
    u = rng.normal(size=(60, d)).astype(np.float32)
    v = (rng.normal(size=(500, d)) * rng.uniform(0.05, 5.0, (500, 1))).astype(np.float32)
    ex = sp.random(60, 500, density=0.1, random_state=seed, format="csr")
    fast = topk_items(u, v, 15, exclude=ex, precision="bf16", block_size=16)
    slow = topk_items(u, v, 15, exclude=ex, precision="fp32")
    np.testing.assert_array_equal(fast.ids.numpy(), slow.ids.numpy())
    np.testing.assert_allclose(fast.scores.numpy(), slow.scores.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fast.ids.numpy(), reference_topk(u, v, 15, ex))


@pytest.mark.parametrize("d", [3, 64, 700])
def test_bf16_bounds_cover_every_float32_score(d):
    """g(bf16 product of the augmented rows) >= exact score + float32 error, for every pair."""
    rng = np.random.default_rng(d)
    u = rng.normal(size=(40, d)) * 10.0 ** rng.uniform(-3, 3, (40, 1))
    v = rng.normal(size=(300, d)) * 10.0 ** rng.uniform(-3, 3, (300, 1))
    v[:5] = rng.integers(-3, 4, (5, d))  # exactly representable rows: zero residual
    ut, vt = torch.tensor(u, dtype=torch.float32), torch.tensor(v, dtype=torch.float32)
    bound = torch.mm(
        bf16_mod.bf16_with_bounds(ut, users=True),
        bf16_mod.bf16_with_bounds(vt, users=False).T,
    ).double()
    unit = 2.0**-8
    upper = torch.where(bound > 0, bound / (1 - unit), bound / (1 + unit))
    exact = ut.double() @ vt.double().T
    norms = ut.double().norm(dim=1)[:, None] * vt.double().norm(dim=1)[None, :]
    assert bool((upper >= exact + (d + 1) * 2.0**-24 * norms).all())
    assert float(((upper - exact) / norms).max()) < 0.05  # and the bound stays useful


def test_precision_choice_and_errors(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(bf16_mod, "cpu_has_amx", lambda: True)
    assert bf16_mod.resolve_precision("auto", cpu, torch.float32, 1024) == "bf16"
    assert bf16_mod.resolve_precision("auto", cpu, torch.float32, 16) == "fp32"
    assert bf16_mod.resolve_precision("auto", cpu, torch.float64, 1024) == "fp32"
    assert bf16_mod.resolve_precision("auto", torch.device("cuda"), torch.float32, 1024) == "fp32"
    monkeypatch.setattr(bf16_mod, "cpu_has_amx", lambda: False)
    assert bf16_mod.resolve_precision("auto", cpu, torch.float32, 1024) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        topk_items(np.ones((2, 2)), np.ones((3, 2)), 1, precision="fp16")
    with pytest.raises(ValueError, match="float32"):
        topk_items(np.ones((2, 2)), np.ones((3, 2)), 1, precision="bf16", dtype=torch.float64)
