"""The epoch loop of ALS, shared by single-process and sharded training.

An epoch is two half-epochs, users then items; each solves one side's rows against the other
side, fixed. Everything that depends on where the rows live is a hook of a :class:`Strategy`:
the fixed side (the model's own table, or one gathered from every rank), the Gram matrix of the
fixed side (None: the solver computes it; summed across ranks in a sharded fit), the exchange of
the solved rows (copied in place into the model's tensors, or kept as this rank's slice), the
reduction of the loss's partial sums and of flags, and what happens around the callback.
:class:`LocalStrategy` is the single-process one; ``recsys.als.distributed`` has the sharded one.

The factors are updated in place every epoch (as `implicit` does), the solver's scratch and the
stacked inputs (a :class:`~recsys.als.solvers.base.Workspace`) are reused across half-epochs, and
the host waits for the device once per half-epoch (in the solver) and once per epoch (the
finiteness check): a fit allocates no fresh memory per epoch.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable
from typing import Any

import scipy.sparse as sp
import torch

from recsys.als.equations import NormalEquations, Rows
from recsys.als.errors import TrainingError, collapsed, diverged
from recsys.als.loss import Observed, Side, combine, loss_sums
from recsys.als.protocol import FactorModel
from recsys.als.solvers.base import Workspace

#: callback(epoch, loss, seconds, model) -> truthy to stop training early
Callback = Callable[[int, float, float, FactorModel], Any]

#: the half-epochs of an epoch, in order, and the name of the fixed side of each
SIDES = ("users", "items")
_FIXED = {"users": "item", "items": "user"}


def collapse_threshold(dtype: torch.dtype) -> float:
    """Largest factor magnitude of a collapsed side: sqrt(tiny / eps) of `dtype` (3e-16 in
    float32). Products of such factors are at most tiny / eps, so a score's interaction term
    is lost next to any bias and keeps no significant digits of its own (denormal range)."""
    info = torch.finfo(dtype)
    return math.sqrt(info.tiny / info.eps)


def extremes(tensors: list[torch.Tensor | None]) -> list[tuple[float, float]]:
    """Smallest and largest entry of every tensor ((0, 0) for None or empty), with one host
    sync for all of them.

    A NaN entry makes both NaN (aminmax propagates it), so they also tell finiteness, and the
    reduction needs no temporary as large as the tensor, unlike isfinite(t).all().
    """
    present = [t for t in tensors if t is not None and t.numel()]
    found = iter(
        torch.stack([torch.stack(torch.aminmax(t)) for t in present]).double().tolist()
        if present
        else []
    )
    return [tuple(next(found)) if t is not None and t.numel() else (0.0, 0.0) for t in tensors]


def finite(found: list[tuple[float, float]]) -> bool:
    """Whether the `extremes` of some tensors say that every entry is finite."""
    return all(math.isfinite(low) and math.isfinite(high) for low, high in found)


def all_finite(tensors: list[torch.Tensor | None]) -> bool:
    """Whether every entry of every tensor is finite."""
    return finite(extremes(tensors))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (epoch timings measure the work, not its queueing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Strategy(abc.ABC):
    """Where the rows live during a fit: the hooks of the epoch loop (see the module doc).

    Subclasses set `model`, `equations`, `rows` (side -> :class:`Rows`) and `workspace`, and
    implement the hooks below.
    """

    model: FactorModel
    equations: NormalEquations
    rows: dict[str, Rows]
    workspace: Workspace

    @abc.abstractmethod
    def current(self, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The factors and biases of the rows of `side` this process solves."""

    @abc.abstractmethod
    def fixed(self, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole other side, which the rows of `side` are solved against."""

    def gram(self, side: str) -> torch.Tensor | None:
        """F^T F of the fixed side when it must be assembled (None: computed from `fixed`)."""
        return None

    @abc.abstractmethod
    def exchange(self, side: str, factors: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Keep the solved rows of `side` (`factors`, `bias` live in the solver's scratch)."""

    def any(self, flag: bool, what: str) -> bool:
        """Whether `flag` holds in any process."""
        return flag

    def reduce(self, sums: torch.Tensor, what: str) -> torch.Tensor:
        """`sums` added up over the processes."""
        return sums

    @abc.abstractmethod
    def loss_parts(self) -> torch.Tensor:
        """This process's :func:`recsys.als.loss.loss_sums`."""

    def end_epoch(self, callback: Callback | None, epoch: int, loss: float, seconds: float) -> bool:
        """Run the callback after `epoch` (1-based); whether to stop."""
        return callback is not None and bool(callback(epoch, loss, seconds, self.model))

    def finish(self) -> None:
        """Leave the model holding its full factors (in one process it holds them all along)."""
        return None


class LocalStrategy(Strategy):
    """One process: the model's own tensors, solved in place."""

    def __init__(self, model: FactorModel, matrix: sp.csr_matrix) -> None:
        self.model = model
        self.equations = model.equations()
        self.rows = {
            "users": self.equations.rows(matrix),
            "items": self.equations.rows(matrix.T.tocsr()),
        }
        self.observed = (
            Observed.from_csr(matrix, model.device, model.dtype) if model.calculate_loss else None
        )
        self.workspace = Workspace()

    def current(self, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.model
        return (m.user_factors, m.user_bias) if side == "users" else (m.item_factors, m.item_bias)

    def fixed(self, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.current("items" if side == "users" else "users")

    def exchange(self, side: str, factors: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Copy into the side's own tensors, in place: no fresh memory per epoch."""
        own_factors, own_bias = self.current(side)
        own_factors.copy_(factors)
        if own_bias is not None:
            own_bias.copy_(bias)

    def loss_parts(self) -> torch.Tensor:
        users, items = self.current("users"), self.current("items")
        return loss_sums(
            self.observed,
            (users, items),
            Side(*users, self.rows["users"].reg),
            Side(*items, self.rows["items"].reg),
            self.equations.global_bias,
            self.equations.weighting,
            self.equations.bias_reg_ratio,
        )


def half_epoch(strategy: Strategy, side: str) -> None:
    """Solve the rows of `side` against the fixed other side and hand them to the strategy.

    A failed solve (a singular system) is agreed on by every process, which then all raise.
    """
    current = strategy.current(side)
    fixed, gram = strategy.fixed(side), strategy.gram(side)
    failure: BaseException | None = None
    try:
        solved = strategy.equations.solve(
            strategy.rows[side], *fixed, *current, gram=gram, workspace=strategy.workspace
        )
    except (torch.linalg.LinAlgError, FloatingPointError) as err:
        failure, solved = err, current
    if strategy.any(failure is not None, f"agreeing on the {_FIXED[side]} solves"):
        raise failure or FloatingPointError("a per-row solve failed on another rank (see its log)")
    strategy.exchange(side, *solved)


def check_epoch(strategy: Strategy, epoch: int, loss: float) -> None:
    """Raise when the factors or the loss are not finite, or when a side's factors collapsed
    to zero (the rows of a side with entries all solved to (nearly) zero vectors: a zero side
    stays zero, every later epoch is wasted). One host sync for all the factor tensors."""
    model = strategy.model
    found = extremes([tensor for side in SIDES for tensor in strategy.current(side)])
    bad = not finite(found) or not (math.isfinite(loss) or not model.calculate_loss)
    if strategy.any(bad, "agreeing on the factors being finite"):
        raise diverged(epoch, "NaN or infinite factors or loss.")
    threshold = collapse_threshold(model.dtype)
    for side, (low, high) in zip(SIDES, found[::2], strict=True):  # factors, then biases
        largest = max(abs(low), abs(high))
        small = bool(strategy.rows[side].buckets) and largest < threshold
        if strategy.any(small, f"agreeing on the {side} factors being nonzero"):
            raise collapsed(epoch, side, largest, strategy.equations.regularization)


def train(strategy: Strategy, callback: Callback | None = None) -> None:
    """Alternate the half-epochs from epoch `len(model.history)` until `model.iterations` or
    until the callback says stop; append each epoch's loss and seconds to the history.

    The factor tensors are updated in place: a callback that keeps an epoch's factors must copy
    them. The loss is NaN when `model.calculate_loss` is off.
    """
    model = strategy.model
    for epoch in range(len(model.history), model.iterations):
        start = time.perf_counter()
        try:
            for side in SIDES:
                half_epoch(strategy, side)
        except TrainingError:  # says what to change already
            raise
        except (torch.linalg.LinAlgError, FloatingPointError) as err:
            raise diverged(epoch, str(err)) from err
        synchronize(model.device)
        seconds = time.perf_counter() - start
        if model.calculate_loss:
            sums = strategy.reduce(strategy.loss_parts(), "all-reduce of the loss")
            loss = combine(sums, strategy.equations.weighting)
        else:
            loss = dict.fromkeys(("loss", "observed", "unobserved", "regularization"), math.nan)
        check_epoch(strategy, epoch, loss["loss"])
        model.history.append({"epoch": epoch + 1, **loss, "seconds": seconds})
        if strategy.end_epoch(callback, epoch + 1, loss["loss"], seconds):
            break
    strategy.finish()
