"""Hu, Koren & Volinsky (2008): confidence c = 1 + alpha * r on observed pairs, preference 1.

Unobserved pairs have confidence 1 and preference 0. Written in the common form
(a = 1, d = alpha * r, g = 1 + alpha * r, e = 1 + alpha * r).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.als.registry import require
from recsys.als.weightings import WEIGHTINGS
from recsys.als.weightings.base import Weighting


@WEIGHTINGS.register("hkv")
@dataclass
class HuKorenVolinsky(Weighting):
    alpha: float = 1.0

    def __post_init__(self) -> None:
        require(self.alpha >= 0, "alpha", self.alpha, "must be >= 0 for weighting 'hkv'")

    @property
    def all_pairs_weight(self) -> float:
        return 1.0

    def observed_weight(self, values: torch.Tensor) -> torch.Tensor:
        return self.alpha * values

    def observed_target(self, values: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.alpha * values

    def observed_constant(self, values: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.alpha * values
