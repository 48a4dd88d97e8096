"""Solvers for the per-row least-squares systems of ALS. One module per solver.

To add one: write `recsys/als/solvers/<name>.py` with a dataclass subclassing `Solver`, decorated
with `@SOLVERS.register("<name>")`, and import the module below.
"""

from recsys.als.registry import Registry
from recsys.als.solvers.base import HalfProblem, Solver

SOLVERS: Registry[Solver] = Registry("solver")

from recsys.als.solvers import cg, cholesky  # noqa: E402, F401

__all__ = ["SOLVERS", "HalfProblem", "Solver"]
