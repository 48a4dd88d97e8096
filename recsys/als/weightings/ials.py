"""iALS as in Rendle et al. (2022), "Revisiting the Performance of iALS on Item Recommendation".

Loss: sum over observed (s - 1)^2 + alpha0 * sum over all pairs s^2
      + lambda * (n_u + alpha0 * N)^nu * ||x_u||^2, with init N(0, 0.1 / sqrt(f)).
Observed values only mark presence (their magnitude is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.als.registry import require
from recsys.als.weightings import WEIGHTINGS
from recsys.als.weightings.base import Weighting


@WEIGHTINGS.register("ials")
@dataclass
class IALS(Weighting):
    alpha0: float = 0.01

    default_reg_exponent = 1.0
    unit_weights = True

    def __post_init__(self) -> None:
        require(self.alpha0 >= 0, "alpha0", self.alpha0, "must be >= 0 for weighting 'ials'")

    @property
    def all_pairs_weight(self) -> float:
        return self.alpha0

    def observed_weight(self, values: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(values)

    def observed_target(self, values: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(values)

    def observed_constant(self, values: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(values)
