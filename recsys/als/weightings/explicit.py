"""Explicit ratings, ALS-WR (Zhou et al. 2008): squared error on observed ratings only.

With the default reg_exponent nu = 1 and a = 0 the regularization is lambda * n_u
("weighted-lambda").
Scores carry the global mean of the training ratings; biases (when enabled) model the offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.als.weightings import WEIGHTINGS
from recsys.als.weightings.base import Weighting


@WEIGHTINGS.register("explicit")
@dataclass
class Explicit(Weighting):
    uses_global_mean = True
    requires_nonnegative = False
    default_reg_exponent = 1.0
    unit_weights = True

    @property
    def all_pairs_weight(self) -> float:
        return 0.0

    def observed_weight(self, values: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(values)

    def observed_target(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def observed_constant(self, values: torch.Tensor) -> torch.Tensor:
        return values * values
