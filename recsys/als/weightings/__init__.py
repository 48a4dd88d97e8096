"""Weightings: how observed values become least-squares weights. One module per weighting.

Every module of this package is imported here, and each registers its weighting: adding one is
adding its file (see README, "Extending"); one outside the package registers when imported.
"""

import importlib
import pkgutil

from recsys.als.registry import Registry
from recsys.als.weightings.base import Weighting

WEIGHTINGS: Registry[Weighting] = Registry("weighting")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["WEIGHTINGS", "Weighting"]
