"""The epoch loop: exact loss, biases, determinism, resume, in-place updates, divergence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS, DivergenceError

from .reference import (
    dense_objective,
    random_matrix,
)


@pytest.mark.parametrize(
    ("weighting", "use_bias"), [("hkv", True), ("ials", False), ("explicit", True)]
)
def test_loss_is_exact_and_decreases_monotonically(weighting, use_bias):
    dense = random_matrix(seed=2)
    model = ALS(
        n_factors=8, regularization=0.05, weighting=weighting, use_bias=use_bias, iterations=8
    )
    model.fit(sp.csr_matrix(dense))
    losses = [h["loss"] for h in model.history]
    assert len(losses) == 8
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0]
    assert model.history[-1]["loss"] == pytest.approx(dense_objective(model, dense), rel=1e-5)
    parts = model.history[-1]
    total = parts["observed"] + parts["unobserved"] + parts["regularization"]
    assert parts["loss"] == pytest.approx(total)


def test_biases_recover_planted_offsets():
    rng = np.random.default_rng(3)
    n_users, n_items = 300, 200
    user_offset = rng.normal(0, 1.0, n_users)
    item_offset = rng.normal(0, 1.0, n_items)
    mask = rng.random((n_users, n_items)) < 0.2
    ratings = 3.0 + user_offset[:, None] + item_offset[None, :] + rng.normal(0, 0.1, mask.shape)
    matrix = sp.csr_matrix(np.where(mask, ratings, 0.0))
    model = ALS(
        n_factors=2, regularization=0.01, weighting="explicit", use_bias=True, iterations=10
    ).fit(matrix)
    learned_users = model.user_bias.numpy() + model.global_bias - 3.0
    assert np.corrcoef(learned_users, user_offset)[0, 1] > 0.98
    assert np.corrcoef(model.item_bias.numpy(), item_offset)[0, 1] > 0.98
    assert model.global_bias == pytest.approx(ratings[mask].mean())
    rmse = np.sqrt(np.mean((model.predict(*np.nonzero(mask)) - ratings[mask]) ** 2))
    assert rmse < 0.15


def test_empty_rows_get_zero_vectors():
    dense = random_matrix(empty_user=3)
    dense[:, 7] = 0
    model = ALS(n_factors=5, regularization=0.1, iterations=2).fit(sp.csr_matrix(dense))
    assert torch.count_nonzero(model.user_factors[3]) == 0
    assert torch.count_nonzero(model.item_factors[7]) == 0
    assert float(model.user_bias[3]) == 0.0


def test_same_seed_same_factors_and_different_seed_differs():
    matrix = sp.csr_matrix(random_matrix(seed=6))
    a = ALS(n_factors=6, iterations=2, seed=11).fit(matrix)
    b = ALS(n_factors=6, iterations=2, seed=11).fit(matrix)
    c = ALS(n_factors=6, iterations=2, seed=12).fit(matrix)
    assert torch.equal(a.user_factors, b.user_factors)
    assert torch.equal(a.item_factors, b.item_factors)
    assert not torch.equal(a.item_factors, c.item_factors)


def test_ials_initialisation_scale():
    model = ALS(n_factors=64, weighting="ials", iterations=0)
    model.fit(sp.csr_matrix(random_matrix(n_users=400, n_items=300)))
    assert float(model.user_factors.std()) == pytest.approx(0.1 / 8, rel=0.05)


def test_resume_continues_to_the_same_factors(tmp_path):
    matrix = sp.csr_matrix(random_matrix(seed=7))
    full = ALS(n_factors=6, iterations=5, solver="cg").fit(matrix)

    def stop_after_two(epoch, loss, seconds, model):
        if epoch == 2:
            model.save(tmp_path / "ckpt.npz")
            return True
        return False

    ALS(n_factors=6, iterations=5, solver="cg").fit(matrix, callback=stop_after_two)
    resumed = ALS.load(tmp_path / "ckpt.npz")
    assert len(resumed.history) == 2
    resumed.fit(matrix, resume=True)
    assert len(resumed.history) == 5
    assert torch.equal(resumed.user_factors, full.user_factors)
    assert torch.equal(resumed.item_factors, full.item_factors)


def test_fit_updates_the_factors_in_place_but_resume_leaves_shared_tensors_alone():
    """Epochs write into the model's own factor tensors (no fresh memory per epoch); a resumed
    fit first takes private copies, so tensors the caller still holds keep their values."""
    matrix = sp.csr_matrix(random_matrix(seed=9))
    seen = []

    def keep(epoch, loss, seconds, model):
        seen.append((model.user_factors, model.item_bias))

    model = ALS(n_factors=6, iterations=3).fit(matrix, callback=keep)
    assert all(u is model.user_factors and b is model.item_bias for u, b in seen)
    held = model.user_factors
    snapshot = held.clone()
    model.iterations = 5
    model.fit(matrix, resume=True)
    assert model.user_factors is not held
    assert torch.equal(held, snapshot)
    assert not torch.equal(model.user_factors, snapshot)


def test_divergence_stops_with_a_clear_error():
    with pytest.raises(DivergenceError, match="diverged at epoch 1"):
        ALS(n_factors=4, regularization=0.0, use_bias=False, init_std=1e30, iterations=2).fit(
            sp.csr_matrix(random_matrix(seed=11))
        )


def test_loss_can_be_skipped_without_changing_the_factors():
    matrix = sp.csr_matrix(random_matrix(seed=16))
    with_loss = ALS(n_factors=6, iterations=3).fit(matrix)
    seen = []
    without = ALS(n_factors=6, iterations=3, calculate_loss=False)
    without.fit(matrix, callback=lambda epoch, loss, seconds, model: seen.append(loss))
    assert torch.equal(with_loss.item_factors, without.item_factors)
    assert len(seen) == 3 and all(np.isnan(seen))
    assert all(h["seconds"] > 0 for h in without.history)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_cuda_matches_cpu(solver):
    matrix = sp.csr_matrix(random_matrix(seed=13))
    kwargs = dict(n_factors=16, regularization=0.1, weighting="ials", iterations=3, solver=solver)
    cpu = ALS(device="cpu", dtype="float64", **kwargs).fit(matrix)
    gpu = ALS(device="cuda", dtype="float64", **kwargs).fit(matrix)
    assert gpu.item_factors.device.type == "cuda"
    assert torch.allclose(gpu.item_factors.cpu(), cpu.item_factors, rtol=1e-6, atol=1e-8)
    assert gpu.history[-1]["loss"] == pytest.approx(cpu.history[-1]["loss"], rel=1e-6)
