"""The errors of a fit that cannot give a usable model. Each message is one line that names the
setting to change.

They are FloatingPointErrors, so the entry points that print a diverged fit as one line print
all of them the same way.
"""

from __future__ import annotations

DIVERGENCE_HINT = (
    "Likely causes: regularization too small for the data (try a larger value) or so large "
    "that the solves overflow, alpha too large, extreme initial values, or float32 overflow "
    "(try dtype='float64')."
)


class TrainingError(FloatingPointError):
    """Training cannot give a usable model (collapsed factors, ill-conditioned solves, settings
    beyond the dtype's range or the memory); the message names the setting to change."""


class DivergenceError(TrainingError):
    """Training produced NaN or infinite factors or loss."""


def diverged(epoch: int, cause: str) -> DivergenceError:
    """The error of training that diverged at (0-based) `epoch`, with the usual remedies."""
    return DivergenceError(f"training diverged at epoch {epoch + 1}: {cause} {DIVERGENCE_HINT}")


def collapsed(epoch: int, side: str, largest: float, regularization: float) -> TrainingError:
    """The error of a fit whose `side` ("users" or "items") factors all shrank to (nearly) zero
    at (0-based) `epoch`."""
    return TrainingError(
        f"training collapsed at epoch {epoch + 1}: every {side[:-1]} factor is (nearly) zero "
        f"(largest magnitude {largest:.3g}), so scores no longer depend on the factors: "
        f"regularization={regularization:g} overwhelms the data (lower regularization), or "
        "nothing is left to learn beyond the global mean and biases (constant values)"
    )
