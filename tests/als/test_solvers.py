"""Solvers against the dense float64 oracle: Cholesky/Woodbury, CG, chunking, scratch buffers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS, SOLVERS, WEIGHTINGS
from recsys.als.batching import build_buckets
from recsys.als.solvers import cholesky as cholesky_module
from recsys.als.solvers.base import HalfProblem

from .reference import (
    CASES,
    assert_fold_in_matches_float64_reference,
    half_step,
    random_matrix,
    reference_user_update,
)


@pytest.mark.parametrize(("weighting", "use_bias", "n_factors"), CASES)
def test_cholesky_user_update_matches_float64_reference(weighting, use_bias, n_factors):
    assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors)


@pytest.mark.parametrize(
    ("weighting", "use_bias", "n_factors"), [("hkv", True, 6), ("ials", False, 24)]
)
def test_blocked_gram_products_match_float64_reference(monkeypatch, weighting, use_bias, n_factors):
    """Large systems build only the upper blocks of their Gram products; force that path on
    small ones (direct at 6 factors, Woodbury at 24) and check the solves stay exact."""
    monkeypatch.setattr(cholesky_module, "BLOCKED_GRAM_MIN_ROWS", 4)
    calls = []
    original = cholesky_module._gram_upper
    monkeypatch.setattr(
        cholesky_module, "_gram_upper", lambda a, out: calls.append(a.shape) or original(a, out)
    )
    assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors)
    assert any(shape[1] >= 4 for shape in calls)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("blocked_gram", [False, True])
@pytest.mark.parametrize(("weighting", "use_bias", "n_factors"), CASES)
def test_cuda_float32_solves_match_float64_reference(
    monkeypatch, weighting, use_bias, n_factors, blocked_gram
):
    """The fit and the solves write into strided workspace views in place: check on CUDA, in
    float32, every path (direct, Woodbury, blocked Gram products) against float64."""
    if blocked_gram:
        monkeypatch.setattr(cholesky_module, "BLOCKED_GRAM_MIN_ROWS", 4)
    assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors, device="cuda")


def test_a_system_that_is_not_positive_definite_fails_the_solve_after_all_chunks_ran():
    """Chunks only flag a failed factorisation (no host sync per chunk); the solve raises."""
    dense = random_matrix(seed=21)
    weighting = WEIGHTINGS.build("explicit")
    buckets, _ = build_buckets(sp.csr_matrix(dense), weighting, torch.device("cpu"), torch.float32)
    fixed = torch.randn(dense.shape[1], 8)
    nan_column = fixed.clone()
    nan_column[7] = float("nan")  # every row that observed column 7 gets a NaN system

    def problem(fixed: torch.Tensor) -> HalfProblem:
        return HalfProblem(
            fixed=fixed,
            all_pairs_weight=weighting.all_pairs_weight,
            offsets=None,
            row_reg=torch.full((dense.shape[0],), 0.1),
            weighting=weighting,
            buckets=buckets,
            memory_budget_bytes=4096,  # many small chunks
        )

    solver = SOLVERS.build("cholesky")
    with pytest.raises(FloatingPointError, match="not positive definite"):
        solver.solve(problem(nan_column), None)
    assert torch.isfinite(solver.solve(problem(fixed), None)[np.flatnonzero(dense.any(1))]).all()


@pytest.mark.parametrize("weighting", ["hkv", "ials", "explicit"])
def test_cg_converges_to_the_exact_solution(weighting):
    dense = random_matrix(seed=1)
    exact = ALS(n_factors=12, regularization=0.1, weighting=weighting, iterations=2, device="cpu")
    exact.fit(sp.csr_matrix(dense))
    cg = ALS(n_factors=12, regularization=0.1, weighting=weighting, solver="cg", cg_steps=40)
    cg.user_factors, cg.item_factors = exact.user_factors.clone(), exact.item_factors.clone()
    cg.user_bias, cg.item_bias = exact.user_bias.clone(), exact.item_bias.clone()
    cg.global_bias = exact.global_bias
    xs, _ = reference_user_update(exact, dense)
    half_step(cg, "users", sp.csr_matrix(dense))
    assert np.abs(cg.user_factors.double().numpy() - xs).max() / np.abs(xs).max() < 1e-3


def test_memory_budget_splits_buckets_without_changing_the_result():
    matrix = sp.csr_matrix(random_matrix(seed=12))
    big = ALS(n_factors=8, iterations=2).fit(matrix)
    tiny = ALS(n_factors=8, iterations=2, memory_budget_mb=0.001).fit(matrix)
    assert torch.allclose(big.item_factors, tiny.item_factors, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_cpu_chunk_workers_give_the_serial_result_and_leave_torch_threads_alone(
    solver, monkeypatch
):
    """With T torch threads the chunks go to T single-threaded workers: same factors as one
    chunk at a time, the caller's thread count untouched."""
    import threading

    from recsys.als.solvers.base import Solver

    matrix = sp.csr_matrix(random_matrix(n_users=120, n_items=90, seed=13))
    kwargs = dict(n_factors=8, iterations=2, solver=solver, memory_budget_mb=0.002, seed=1)
    chunk_threads: set[str] = set()
    real = SOLVERS.get(solver).solve_chunk

    def recording(self, *args):
        chunk_threads.add(threading.current_thread().name)
        return real(self, *args)

    monkeypatch.setattr(SOLVERS.get(solver), "solve_chunk", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        parallel = ALS(**kwargs).fit(matrix)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert len(chunk_threads) > 1 and all(n.startswith("als-solve") for n in chunk_threads)
    monkeypatch.setattr(Solver, "_workers", lambda self, problem: 1)
    chunk_threads.clear()
    serial = ALS(**kwargs).fit(matrix)
    assert chunk_threads == {threading.main_thread().name}
    for side in ("user_factors", "item_factors"):
        a, b = getattr(parallel, side), getattr(serial, side)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), side


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_solver_scratch_buffers_live_only_during_a_fit_or_fold_in(solver):
    """The workspaces (gathered rows, systems, the rotated fixed side) are reused across
    half-epochs but dropped when the fit or fold-in ends, so a fitted model holds only its
    factors."""
    matrix = sp.csr_matrix(random_matrix(n_users=40, n_items=30, seed=3))
    seen: list[bool] = []
    model = ALS(n_factors=4, iterations=2, solver=solver, seed=0)
    model.fit(matrix, callback=lambda *args: seen.append("_workspaces" in model.solver.__dict__))
    assert seen == [True, True]
    assert "_workspaces" not in model.solver.__dict__
    model.fold_in(matrix[:5])
    assert "_workspaces" not in model.solver.__dict__
