"""ALS matrix factorisation: the model, its weightings and its solvers."""

from recsys.als.errors import DivergenceError, TrainingError
from recsys.als.model import ALS
from recsys.als.solvers import SOLVERS, HalfProblem, Solver
from recsys.als.weightings import WEIGHTINGS, Weighting

__all__ = [
    "ALS",
    "SOLVERS",
    "WEIGHTINGS",
    "DivergenceError",
    "HalfProblem",
    "Solver",
    "TrainingError",
    "Weighting",
]
