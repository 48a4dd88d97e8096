"""Weightings: how observed values become least-squares weights. One module per weighting."""

from recsys.als.registry import Registry
from recsys.als.weightings.base import Weighting

WEIGHTINGS: Registry[Weighting] = Registry("weighting")

# Importing the modules registers them.
from recsys.als.weightings import explicit, hkv, ials  # noqa: E402, F401

__all__ = ["WEIGHTINGS", "Weighting"]
