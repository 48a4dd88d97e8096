"""What training, posterior sampling and persistence read and write of a model.

`recsys.als.model.ALS` satisfies it; the modules that work on a model type against this protocol
instead of importing the model, so the model can import them (no import cycle).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch

from recsys.als.equations import NormalEquations
from recsys.als.solvers import Solver


class FactorModel(Protocol):
    """The factors and biases (biases None without them), the global mean, the history, the
    training settings the loop reads, and the normal equations of a side."""

    TENSORS: ClassVar[tuple[str, ...]]
    user_factors: torch.Tensor | None
    item_factors: torch.Tensor | None
    user_bias: torch.Tensor | None
    item_bias: torch.Tensor | None
    global_bias: float
    history: list[dict[str, float]]
    posterior: dict[str, Any] | None
    user_ids: Any
    item_ids: Any
    iterations: int
    calculate_loss: bool
    device: torch.device
    dtype: torch.dtype
    solver: Solver

    @property
    def params(self) -> dict[str, Any]: ...

    def equations(self) -> NormalEquations: ...
