"""Solvers for the per-row least-squares systems of ALS. One module per solver.

Every module of this package is imported here, and each registers its solver: adding one is
adding its file, a dataclass subclassing `Solver` decorated with `@SOLVERS.register("<name>")`
(see README, "Extending"); one outside the package registers when imported.
"""

import importlib
import pkgutil

from recsys.als.registry import Registry
from recsys.als.solvers.base import HalfProblem, Solver

SOLVERS: Registry[Solver] = Registry("solver")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SOLVERS", "HalfProblem", "Solver"]
