"""The load and split stages: the data a run trains, validates and tests on, from ``cfg.data``
and ``cfg.split``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import ConfigError, TrainConfig

__all__ = ["Prepared", "load_data", "prepare_data"]


@dataclass
class Prepared:
    """The data a run trains and evaluates on (all Interactions share one id space)."""

    full_stats: dict[str, Any]
    train: Any  # Interactions: the whole training split (seen items at test time)
    test: Any  # Interactions: held-out interactions to evaluate on
    fold_in: Any | None  # Interactions: histories of held-out users (strong generalization)
    fit: Any  # Interactions: what ALS trains on (train minus validation when there is one)
    validation: Any | None  # Interactions: validation interactions carved from train
    report: dict[str, Any]


def _resolve_path(path: str | None) -> Path | None:
    return None if path is None else Path(os.path.expanduser(path))


def load_data(cfg: TrainConfig) -> tuple[Any, Any | None]:
    """``(interactions, given_split_or_None)`` from ``cfg.data``; raises DataError on bad input.

    Sources with a test set of their own (LightGCN folders, MovieLens ``train_file`` /
    ``test_file``, a table with ``test_path``) return it as a ``Split``; ``interactions`` is then
    its training part.
    """
    from recsys import data as rdata

    d = cfg.data
    path = _resolve_path(d.path)
    if d.source == "synthetic":
        return rdata.synthetic_preset(d.preset, seed=d.seed), None
    if d.source == "movielens":
        result = rdata.load_movielens(
            path,
            variant=d.variant,
            download=d.download,
            cache_dir=_resolve_path(d.cache_dir),
            train_file=d.train_file,
            test_file=d.test_file,
        )
    elif d.source == "lightgcn":
        kwargs = {k: v for k, v in (("train_file", d.train_file), ("test_file", d.test_file)) if v}
        result = rdata.load_lightgcn(path, **kwargs)
    else:

        def column(name: str | None) -> str | int | None:
            positional = name is not None and not d.header and name.isdigit()
            return int(name) if positional else name

        result = rdata.load_table(
            path,
            user_col=column(d.user_col),
            item_col=column(d.item_col),
            value_col=column(d.value_col),
            timestamp_col=column(d.timestamp_col),
            sep=d.sep,
            header=d.header,
            test_path=_resolve_path(d.test_path),
            chunk_rows=d.chunk_rows,
            encoding=d.encoding,
            id_type=d.id_type,
        )
    if isinstance(result, rdata.Split):
        return result.train, result
    return result, None


def prepare_data(cfg: TrainConfig) -> Prepared:
    """Load, clean, split and carve the validation split, as configured."""
    interactions, given = load_data(cfg)
    interactions, given_test = _clean(cfg, interactions, given)
    full_stats = interactions.stats()
    split = _split(cfg, interactions, given, given_test)
    fit, validation, report = _carve_validation(cfg, split)
    return Prepared(full_stats, split.train, split.test, split.fold_in, fit, validation, report)


def _clean(cfg: TrainConfig, interactions: Any, given: Any | None) -> tuple[Any, Any | None]:
    """``data.binarize`` (the given test set too) and the minimum-interaction filter."""
    given_test = None if given is None else given.test
    if cfg.data.binarize is not None:
        interactions = interactions.binarize(cfg.data.binarize)
        if given_test is not None:
            given_test = given_test.binarize(cfg.data.binarize)
    if cfg.data.min_user_interactions or cfg.data.min_item_interactions:
        if given is not None:
            raise ConfigError(
                "data.min_user_interactions / data.min_item_interactions would re-index a "
                "dataset that comes with its own test set; set them to 0 or use another split"
            )
        interactions = interactions.filter_min_interactions(
            min_user=max(1, cfg.data.min_user_interactions),
            min_item=max(1, cfg.data.min_item_interactions),
        )
    return interactions, given_test


def _split(cfg: TrainConfig, interactions: Any, given: Any | None, given_test: Any | None) -> Any:
    """The train / test ``Split`` of ``cfg.split.method`` (``given``: the source's own)."""
    from recsys.data import (
        Split,
        leave_k_out,
        random_holdout,
        strong_generalization,
        temporal_split,
    )

    if given is not None and cfg.split.method != "given":
        raise ConfigError(
            f"data.source={cfg.data.source} comes with its own test set; use split=given (or "
            "load the data without train_file/test_file/test_path to split it yourself)"
        )
    s = cfg.split
    min_n = s.min_user_interactions
    if s.method == "given":
        if given is None:
            raise ConfigError(
                f"split.method=given: data.source={cfg.data.source} has no test set of its own; "
                "use split=random (or leave_k_out, temporal, strong), or give data.test_path / "
                "data.test_file"
            )
        return Split(interactions, given_test, None, {"method": "given", **given.report})
    if s.method == "random":
        return random_holdout(interactions, s.test_fraction, seed=s.seed, min_interactions=min_n)
    if s.method == "leave_k_out":
        return leave_k_out(interactions, s.k, seed=s.seed, min_interactions=max(s.k + 1, min_n))
    if s.method == "temporal":
        return temporal_split(interactions, test_fraction=s.test_fraction)
    return strong_generalization(
        interactions,
        test_users=s.test_users,
        eval_fraction=s.test_fraction,
        seed=s.seed,
        min_interactions=max(2, min_n),
    )


def _carve_validation(cfg: TrainConfig, split: Any) -> tuple[Any, Any | None, dict[str, Any]]:
    """``(fit, validation_or_None, report)``: the validation split early stopping evaluates on,
    carved from the training part (``split.validation``, when ``eval.every`` evaluates or the
    run is a tuning trial, ``eval.test=false``, whose final evaluation is on it)."""
    from recsys.data import validation_split

    s = cfg.split
    report = dict(split.report or {})
    if not (s.validation > 0 and (cfg.eval.every > 0 or not cfg.eval.test)):
        return split.train, None, report
    carved = validation_split(
        split.train, "random", test_fraction=s.validation, seed=s.seed + 1,
        min_interactions=max(2, s.min_user_interactions),
    )  # fmt: skip
    report["validation"] = dict(carved.report)
    return carved.train, carved.test, report
