"""Configuration schemas of the training pipeline, and their validation.

One dataclass per Hydra config group (``als``, ``data``, ``split``, ``index``, ``eval``) plus the
top-level :class:`TrainConfig`. The YAML files under ``conf/`` extend these schemas in their
defaults lists, so Hydra rejects a typo'd key or a wrong type while composing; the ranges and the
allowed names are checked in ``__post_init__``, which runs when :func:`validate` turns the composed
config into dataclass instances. Every problem becomes a :class:`ConfigError` whose message is one
line naming the key, the bad value and what is allowed, e.g.
``als.n_factors=0: must be an integer >= 1``.

- :mod:`recsys.config.checks`: the error and the range checks;
- :mod:`recsys.config.als`: the ``als`` schema, built from `ALS` and the part registries, and
  the plugins that register more parts;
- :mod:`recsys.config.schemas`: the other groups and the whole job;
- :mod:`recsys.config.compose`: validation and the Hydra glue (Hydra is imported only inside
  :func:`register_configs` and :func:`check_overrides`, so ``recsys.pipeline`` can use the
  schemas without importing Hydra).
"""

from recsys.config.als import ALSConfig, als_schema, load_plugins, plugins_in_overrides
from recsys.config.checks import ConfigError
from recsys.config.compose import (
    GROUPS,
    REPO_ROOT,
    check_overrides,
    differing_keys,
    flatten,
    format_error,
    latest_unfinished_run,
    now_stamp,
    register_configs,
    register_resolvers,
    repo_root,
    to_dict,
    validate,
)
from recsys.config.schemas import (
    MINIMIZE,
    RANKING_METRICS,
    RATING_METRICS,
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    IndexConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    train_schema,
)

__all__ = [
    "GROUPS",
    "MINIMIZE",
    "RANKING_METRICS",
    "RATING_METRICS",
    "REPO_ROOT",
    "ALSConfig",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "IndexConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainConfig",
    "als_schema",
    "check_overrides",
    "differing_keys",
    "flatten",
    "format_error",
    "latest_unfinished_run",
    "load_plugins",
    "now_stamp",
    "plugins_in_overrides",
    "register_configs",
    "register_resolvers",
    "repo_root",
    "to_dict",
    "train_schema",
    "validate",
]
