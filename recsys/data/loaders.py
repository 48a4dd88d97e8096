"""One entry point for every data source, for configuration-driven code.

``load_dataset(kind, **options)`` passes ``options`` on to the loader of that kind:

- ``"synthetic"``: :func:`~recsys.data.synthetic.synthetic_preset` when ``preset`` is given, else
  :func:`~recsys.data.synthetic.synthetic`; returns :class:`Interactions`.
- ``"movielens"``: :func:`~recsys.data.movielens.load_movielens` (``source``, ``variant``,
  ``download``, ``cache_dir``); returns :class:`Interactions`, or a :class:`Split` when
  ``train_file``/``test_file`` name a predefined split.
- ``"movielens_100k_split"``: :func:`~recsys.data.movielens.load_movielens_100k_split`
  (``source``, ``fold``); returns a :class:`Split`.
- ``"lightgcn"``: :func:`~recsys.data.lightgcn.load_lightgcn` (``folder``); returns a
  :class:`Split`.
- ``"table"``: :func:`~recsys.data.tables.load_table` (``path``, column names, ``sep``, ...);
  returns :class:`Interactions`, or a :class:`Split` when ``test_path`` is given.

A :class:`Split` comes from a source with its own test set; an :class:`Interactions` still has to
be split (see :mod:`recsys.data.splits`).
"""

from __future__ import annotations

from typing import Any

from recsys.data.interactions import Interactions
from recsys.data.lightgcn import load_lightgcn
from recsys.data.movielens import load_movielens, load_movielens_100k_split
from recsys.data.splits import Split
from recsys.data.synthetic import synthetic, synthetic_preset
from recsys.data.tables import load_table

__all__ = ["DATASET_KINDS", "load_dataset"]

DATASET_KINDS = ("synthetic", "movielens", "movielens_100k_split", "lightgcn", "table")


def load_dataset(kind: str, **options: Any) -> Interactions | Split:
    """Load a data set by kind (see the module docstring for the options of each kind)."""
    if kind == "synthetic":
        preset = options.pop("preset", None)
        return synthetic_preset(preset, **options) if preset else synthetic(**options)
    if kind == "movielens":
        return load_movielens(**options)
    if kind == "movielens_100k_split":
        return load_movielens_100k_split(**options)
    if kind == "lightgcn":
        return load_lightgcn(**options)
    if kind == "table":
        return load_table(**options)
    raise ValueError(f"unknown data set kind {kind!r}; choose one of {DATASET_KINDS}")
