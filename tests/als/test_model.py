"""The model: fold-in, partial fits, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS

from .reference import (
    half_step,
    random_matrix,
)


def test_fold_in_of_a_training_user_reproduces_its_vector():
    dense = random_matrix(seed=4)
    model = ALS(n_factors=10, regularization=0.1, weighting="hkv", alpha=3.0, iterations=3)
    model.fit(sp.csr_matrix(dense))
    # one more user half-step makes the stored user vectors the exact solution for the item side
    half_step(model, "users", sp.csr_matrix(dense))
    rows = sp.csr_matrix(dense[[5, 7, 11]])
    factors, bias = model.fold_in_factors(rows)
    assert torch.allclose(factors, model.user_factors[[5, 7, 11]], rtol=1e-5, atol=1e-6)
    assert torch.allclose(bias, model.user_bias[[5, 7, 11]], rtol=1e-5, atol=1e-6)
    embeddings = model.fold_in(rows)
    np.testing.assert_allclose(embeddings, model.user_embeddings([5, 7, 11]), rtol=1e-5, atol=1e-6)


def test_partial_fit_users_updates_and_adds_users():
    dense = random_matrix(seed=5)
    model = ALS(n_factors=6, regularization=0.1, iterations=2).fit(sp.csr_matrix(dense))
    n = model.n_users
    new_row = sp.csr_matrix(dense[[2]])
    model.partial_fit_users([n + 1], new_row)
    assert model.n_users == n + 2
    assert torch.count_nonzero(model.user_factors[n]) == 0  # the gap is a zero row
    factors, _ = model.fold_in_factors(new_row)
    assert torch.allclose(model.user_factors[n + 1], factors[0])
    # the items' side: re-solving item 0 from its column equals a full item half-step
    grown = sp.vstack([sp.csr_matrix(dense), sp.csr_matrix((1, dense.shape[1])), new_row]).tocsr()
    model.partial_fit_items([0], grown[:, [0]].T.tocsr())
    expected = model.item_factors.clone()
    half_step(model, "items", grown)
    assert torch.allclose(expected[0], model.item_factors[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_factors": 0}, "n_factors must be >= 1"),
        ({"n_factors": 2.5}, "n_factors must be an integer"),
        ({"regularization": -0.1}, "regularization must be >= 0"),
        ({"solver": "lu"}, "unknown solver 'lu'; choose one of: cg, cholesky"),
        ({"weighting": "bpr"}, "unknown weighting 'bpr'; choose one of: explicit, hkv, ials"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"alpha": -1.0}, "alpha must be >= 0"),
        ({"cg_steps": 0, "solver": "cg"}, "cg_steps must be >= 1"),
        ({"use_bias": True, "regularization": 0.0}, "use_bias=True needs regularization > 0"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ALS(**kwargs)


def test_bad_inputs_raise_clear_errors():
    dense = random_matrix(seed=10)
    with pytest.raises(ValueError, match="CSR"):
        ALS(n_factors=3).fit(dense)
    with pytest.raises(ValueError, match="CSR"):
        ALS(n_factors=3).fit(sp.coo_matrix(dense))
    negative = sp.csr_matrix(-dense)
    with pytest.raises(ValueError, match="needs them >= 0"):
        ALS(n_factors=3, weighting="hkv").fit(negative)
    with pytest.raises(ValueError, match="needs them >= 0"):
        ALS(n_factors=3, weighting="ials").fit(negative)
    ALS(n_factors=3, weighting="explicit", iterations=1).fit(negative)  # signed ratings are fine
    nan = sp.csr_matrix(dense)
    nan.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ALS(n_factors=3).fit(nan)
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(dense))
    with pytest.raises(ValueError, match="columns"):
        model.fold_in_factors(sp.csr_matrix(np.ones((2, 5))))
    with pytest.raises(IndexError, match="user ids"):
        model.predict([10_000], [0])
    with pytest.raises(RuntimeError, match="not fitted"):
        ALS().item_embeddings()
