"""The Normal-Wishart hyperprior of Bayesian matrix factorisation (Salakhutdinov & Mnih 2008).

Each side's vectors x_u share a Gaussian prior N(mu, Lambda^-1) whose mean and precision are
themselves drawn, every Gibbs sweep, from their conditional given the current vectors: the prior
adapts to the data (per direction, with correlations) instead of being one tuned lambda. With the
conjugate hyperprior mu ~ N(mu0, (beta0 Lambda)^-1), Lambda ~ Wishart(W0, nu0) and n vectors of
mean x_bar and (biased) covariance S, the conditional is Normal-Wishart with

    beta* = beta0 + n,   nu* = nu0 + n,   mu* = (beta0 mu0 + n x_bar) / beta*,
    W*^-1 = W0^-1 + n S + beta0 n / beta* (x_bar - mu0)(x_bar - mu0)^T.

Defaults as in the paper: mu0 = 0, beta0 = 2, W0 = I, nu0 = the dimension.

:func:`sample_posterior` is the Gibbs sampler of `ALS.sample_posterior` over the same solvers:
each sweep draws the noise precision, each side's prior (when learned) and then every row.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch
from scipy import stats

from recsys.als.equations import NormalEquations, Rows
from recsys.als.errors import diverged
from recsys.als.loss import Observed, Side, als_loss
from recsys.als.protocol import FactorModel
from recsys.als.training import SIDES, all_finite, synchronize


def draw_normal_wishart(
    vectors: np.ndarray, rng: np.random.Generator, *, beta0: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (mu, Lambda) from their conditional given `vectors` (n, k); float64 arrays."""
    x = np.asarray(vectors, dtype=np.float64)
    n, k = x.shape
    mean = x.mean(axis=0)
    centred = x - mean
    scatter = centred.T @ centred  # n S
    beta = beta0 + n
    inverse_scale = np.eye(k) + scatter + (beta0 * n / beta) * np.outer(mean, mean)
    scale = np.linalg.inv(inverse_scale)
    precision = stats.wishart.rvs(df=k + n, scale=(scale + scale.T) / 2, random_state=rng)
    precision = np.atleast_2d(precision)
    # mu ~ N(n x_bar / beta, (beta Lambda)^-1), drawn through the Cholesky factor of beta Lambda
    factor = np.linalg.cholesky(beta * precision)
    mu = n * mean / beta + np.linalg.solve(factor.T, rng.standard_normal(k))
    return mu, precision


def sample_posterior(
    model: FactorModel, matrix: sp.csr_matrix, samples: int, burn_in: int, seed: int, prior: str
) -> None:
    """Replace `model`'s factors by the average of `samples` Gibbs draws (see
    `ALS.sample_posterior`, which checks the arguments); appends one history entry per sweep."""
    eq = model.equations()
    generator = torch.Generator(device=model.device)
    generator.manual_seed(seed)
    gamma = np.random.default_rng(seed)
    users, items = eq.rows(matrix), eq.rows(matrix.T.tocsr())
    observed = Observed.from_csr(matrix, model.device, model.dtype)
    # terms of the Gaussian likelihood: the observed entries, or every pair when a > 0
    n_terms = matrix.nnz if eq.weighting.all_pairs_weight == 0 else math.prod(matrix.shape)
    learned = prior == "learned"
    # with a learned prior it replaces the per-row regularization in the solves
    solve_rows = {
        "users": users.without_regularization() if learned else users,
        "items": items.without_regularization() if learned else items,
    }
    draws: list[tuple[torch.Tensor | None, ...]] = []
    with model.solver.scratch():
        for sweep in range(burn_in + samples):
            start = time.perf_counter()
            loss = als_loss(
                observed,
                Side(model.user_factors, model.user_bias, users.reg),
                Side(model.item_factors, model.item_bias, items.reg),
                eq.global_bias,
                eq.weighting,
                eq.bias_reg_ratio,
            )
            error = loss["observed"] + loss["unobserved"]  # the weighted squared error
            tau = float(gamma.gamma(n_terms / 2.0, 2.0 / max(error, 1e-30)))
            for side in SIDES:
                _draw_side(model, eq, solve_rows[side], side, tau, generator, gamma, learned)
            synchronize(model.device)
            tensors = [getattr(model, name) for name in model.TENSORS]
            if not (
                all_finite(tensors) and (math.isfinite(loss["loss"]) or not model.calculate_loss)
            ):
                raise diverged(len(model.history), "NaN or infinite factors or loss.")
            if sweep >= burn_in:
                draws.append(tuple(tensors))
            model.history.append({
                "epoch": len(model.history) + 1, "phase": "posterior", **loss,
                "noise_precision": tau, "seconds": time.perf_counter() - start,
            })  # fmt: skip
    _average(model, draws)


def _draw_side(
    model: FactorModel,
    eq: NormalEquations,
    rows: Rows,
    side: str,
    tau: float,
    generator: torch.Generator,
    gamma: np.random.Generator,
    learned: bool,
) -> None:
    """Draw every row of `side` from its Gaussian conditional N(mean, A_u^-1 / tau), with the
    side's prior drawn first from its Normal-Wishart conditional when it is `learned`."""
    user, item = (model.user_factors, model.user_bias), (model.item_factors, model.item_bias)
    current, fixed = (user, item) if side == "users" else (item, user)
    prior = None
    if learned:
        factors, bias = current
        coords = (
            factors if bias is None else torch.cat([factors, (bias / eq.bias_column)[:, None]], 1)
        )
        # the prior (P, mu) in solve coordinates [x, b / c], P = Lambda / tau (the solves are
        # scaled by the noise precision tau)
        mu, precision = draw_normal_wishart(coords.double().cpu().numpy(), gamma)
        to = lambda a: torch.from_numpy(a).to(model.device, model.dtype)  # noqa: E731
        prior = (to(precision / tau), to(mu))
    solved = eq.solve_copy(
        rows, *fixed, *current, noise_scale=1.0 / math.sqrt(tau), generator=generator, prior=prior
    )
    if side == "users":
        model.user_factors, model.user_bias = solved
    else:
        model.item_factors, model.item_bias = solved


def _average(model: FactorModel, draws: list[tuple[torch.Tensor | None, ...]]) -> None:
    """The average of S factor models is itself one: the draws side by side, each scaled by
    1/sqrt(S), and the mean biases."""
    scale = 1.0 / math.sqrt(len(draws))
    model.user_factors = torch.cat([d[0] for d in draws], dim=1) * scale
    model.item_factors = torch.cat([d[1] for d in draws], dim=1) * scale
    if model.user_bias is not None:
        model.user_bias = torch.stack([d[2] for d in draws]).mean(0)
        model.item_bias = torch.stack([d[3] for d in draws]).mean(0)
