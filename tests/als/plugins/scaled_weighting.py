"""A weighting defined outside the package, as a user would write one: confidence
1 + beta * log(1 + r) (Hu-Koren-Volinsky on log-scaled counts). Copied into a folder on
PYTHONPATH by the plugin tests; never imported from the test package itself."""

from dataclasses import dataclass

import torch

from recsys.als import WEIGHTINGS, Weighting
from recsys.als.registry import require


@WEIGHTINGS.register("scaled")
@dataclass
class LogScaled(Weighting):
    beta: float = 1.0

    def __post_init__(self) -> None:
        require(self.beta >= 0, "beta", self.beta, "must be >= 0 for weighting 'scaled'")

    @property
    def all_pairs_weight(self) -> float:
        return 1.0

    def observed_weight(self, values: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.log1p(values)

    def observed_target(self, values: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.beta * torch.log1p(values)

    def observed_constant(self, values: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.beta * torch.log1p(values)
