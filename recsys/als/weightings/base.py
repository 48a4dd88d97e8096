"""The interface every weighting implements.

ALS minimises, per row u (a user, or an item in the other half-epoch) with the other side fixed,

    sum_{j observed} [ d_uj * s_uj^2 - 2 * g_uj * s_uj + e_uj ]  +  a * sum_{all j} s_uj^2
        + lambda * (n_u + a * N)^nu * ||x_u||^2,

where s_uj is the model score. A weighting says how raw values r become the per-entry quadratic
weight d = observed_weight(r), linear weight g = observed_target(r) and constant e =
observed_constant(r), and what the all-pairs weight a is. The normal equations of one row are then

    (a * F^T F + F_u^T D_u F_u + lambda_u I) x_u = F_u^T g_u  (minus terms for fixed score offsets)

which is what every solver solves. Hu-Koren-Volinsky, iALS and explicit ALS-WR are all of this form.
"""

from __future__ import annotations

import abc
import math

import torch

from recsys.data.errors import DataError


class Weighting(abc.ABC):
    """How observed values turn into the weights and targets of the least-squares problem."""

    #: the name the registry knows this weighting by (set by `WEIGHTINGS.register`)
    name: str = ""
    #: whether scores carry a global mean rather than 0 for unobserved pairs: scores then
    #: estimate the observed values themselves (explicit ratings), so rating metrics apply
    #: and a stored 0 is a rating (for the others it is no interaction and is dropped)
    uses_global_mean: bool = False
    #: whether negative values are meaningless for this weighting (implicit confidences)
    requires_nonnegative: bool = True
    #: whether observed_weight is 1 on every observed entry (lets solvers skip a scaling pass)
    unit_weights: bool = False
    #: the default exponent nu of the frequency-scaled regularization
    default_reg_exponent: float = 0.0

    @property
    @abc.abstractmethod
    def all_pairs_weight(self) -> float:
        """Weight a on the squared score of every (row, column) pair, observed or not."""

    @abc.abstractmethod
    def observed_weight(self, values: torch.Tensor) -> torch.Tensor:
        """Extra quadratic weight d on observed entries (added to a)."""

    @abc.abstractmethod
    def observed_target(self, values: torch.Tensor) -> torch.Tensor:
        """Linear coefficient g of observed entries (the right-hand side per entry)."""

    @abc.abstractmethod
    def observed_constant(self, values: torch.Tensor) -> torch.Tensor:
        """Constant e per observed entry, so the loss is the true weighted squared error."""

    def init_std(self, n_factors: int) -> float:
        """Standard deviation of the normal initialisation of the factors."""
        return 0.1 / math.sqrt(n_factors)

    def check_values(self, values: torch.Tensor) -> None:
        """Raise DataError (a ValueError) when the values cannot be used with this weighting."""
        if not bool(torch.isfinite(values).all()):
            raise DataError(
                "user_items contains NaN or infinite values", fix="drop or fix them before fitting"
            )
        if self.requires_nonnegative and bool((values < 0).any()):
            raise DataError(
                f"weighting {self.name!r} treats values as confidences and needs them >= 0, "
                "but user_items has negative values",
                fix="use weighting='explicit' for signed ratings or shift/clip the values",
            )
