"""The Normal-Wishart hyperprior of Bayesian matrix factorisation (Salakhutdinov & Mnih 2008).

Each side's vectors x_u share a Gaussian prior N(mu, Lambda^-1) whose mean and precision are
themselves drawn, every Gibbs sweep, from their conditional given the current vectors: the prior
adapts to the data (per direction, with correlations) instead of being one tuned lambda. With the
conjugate hyperprior mu ~ N(mu0, (beta0 Lambda)^-1), Lambda ~ Wishart(W0, nu0) and n vectors of
mean x_bar and (biased) covariance S, the conditional is Normal-Wishart with

    beta* = beta0 + n,   nu* = nu0 + n,   mu* = (beta0 mu0 + n x_bar) / beta*,
    W*^-1 = W0^-1 + n S + beta0 n / beta* (x_bar - mu0)(x_bar - mu0)^T.

Defaults as in the paper: mu0 = 0, beta0 = 2, W0 = I, nu0 = the dimension.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


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
