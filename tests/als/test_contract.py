"""The contract every registered weighting x solver keeps, with and without biases, in float32
and float64: fold-in equals the dense float64 oracle, the loss is the exact objective, a fit is
deterministic, and save/load round-trips. A new part is covered by registering it.

Approximate solvers run with their `converged_params` and are held to 1e-3 (what those
parameters promise); exact ones to rounding.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS, SOLVERS, WEIGHTINGS

from .reference import dense_objective, random_matrix, reference_user_update

COMBOS = list(
    itertools.product(WEIGHTINGS.names(), SOLVERS.names(), [False, True], ["float32", "float64"])
)


def build(weighting: str, solver: str, use_bias: bool, dtype: str, **kwargs) -> ALS:
    return ALS(
        n_factors=6, regularization=0.1, bias_regularization=0.05, weighting=weighting,
        solver=solver, use_bias=use_bias, dtype=dtype, iterations=3, device="cpu",
        **SOLVERS.get(solver).converged_params, **kwargs,
    )  # fmt: skip


def tolerance(solver: str, dtype: str) -> float:
    if not SOLVERS.get(solver).exact:
        return 1e-3
    return 1e-4 if dtype == "float32" else 1e-9


@pytest.mark.parametrize(("weighting", "solver", "use_bias", "dtype"), COMBOS)
def test_fold_in_matches_the_float64_oracle(weighting, solver, use_bias, dtype):
    dense = random_matrix(seed=11)
    model = build(weighting, solver, use_bias, dtype).fit(sp.csr_matrix(dense))
    xs, bs = reference_user_update(model, dense)
    factors, bias = model.fold_in_factors(sp.csr_matrix(dense))
    scale = np.abs(xs).max()
    assert np.abs(factors.double().numpy() - xs).max() / scale < tolerance(solver, dtype)
    if use_bias:
        bias_scale = np.abs(bs).max()
        assert np.abs(bias.double().numpy() - bs).max() / bias_scale < tolerance(solver, dtype)
    else:
        assert bias is None
    assert factors.dtype == model.dtype


@pytest.mark.parametrize(("weighting", "solver", "use_bias", "dtype"), COMBOS)
def test_the_loss_is_the_exact_objective(weighting, solver, use_bias, dtype):
    dense = random_matrix(seed=12)
    model = build(weighting, solver, use_bias, dtype).fit(sp.csr_matrix(dense))
    assert len(model.history) == 3
    rel = 1e-5 if dtype == "float32" else 1e-10
    assert model.history[-1]["loss"] == pytest.approx(dense_objective(model, dense), rel=rel)


@pytest.mark.parametrize(("weighting", "solver", "use_bias", "dtype"), COMBOS)
def test_fits_are_deterministic_and_round_trip(tmp_path, weighting, solver, use_bias, dtype):
    matrix = sp.csr_matrix(random_matrix(seed=13))
    model = build(weighting, solver, use_bias, dtype).fit(matrix)
    again = build(weighting, solver, use_bias, dtype).fit(matrix)
    for name in ALS.TENSORS:
        a, b = getattr(model, name), getattr(again, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    loaded = ALS.load(model.save(tmp_path / "model.npz"))
    assert loaded.params == model.params
    assert type(loaded.weighting) is type(model.weighting)
    assert type(loaded.solver) is type(model.solver)
    users, items = np.arange(model.n_users), np.arange(model.n_users) % model.n_items
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
