"""The data layer: interactions, loaders, synthetic data and splits.

Everything a model needs comes as an :class:`Interactions` (a users x items CSR matrix with id maps)
or a :class:`Split` of them. Problems with input data raise :class:`DataError` with the file, the
line and what to fix.
"""

from recsys.data.errors import DataError
from recsys.data.interactions import Interactions, require_nonnegative, to_implicit
from recsys.data.lightgcn import load_lightgcn
from recsys.data.loaders import DATASET_KINDS, load_dataset
from recsys.data.movielens import fetch_movielens, load_movielens, load_movielens_100k_split
from recsys.data.splits import (
    SPLIT_METHODS,
    Split,
    leave_k_out,
    make_split,
    random_holdout,
    strong_generalization,
    temporal_split,
    validation_split,
)
from recsys.data.synthetic import SYNTHETIC_PRESETS, synthetic, synthetic_preset
from recsys.data.tables import load_table, load_table_split

__all__ = [
    "DATASET_KINDS",
    "SPLIT_METHODS",
    "SYNTHETIC_PRESETS",
    "DataError",
    "Interactions",
    "Split",
    "fetch_movielens",
    "leave_k_out",
    "load_dataset",
    "load_lightgcn",
    "load_movielens",
    "load_movielens_100k_split",
    "load_table",
    "load_table_split",
    "make_split",
    "random_holdout",
    "require_nonnegative",
    "strong_generalization",
    "synthetic",
    "synthetic_preset",
    "temporal_split",
    "to_implicit",
    "validation_split",
]
