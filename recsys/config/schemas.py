"""The schemas of the pipeline's config groups other than ``als`` (see :mod:`recsys.config.als`),
and of the whole job (:class:`TrainConfig`); ranges and names are checked in ``__post_init__``.
"""

import dataclasses
import typing
from dataclasses import dataclass, field

from omegaconf import II

from recsys.als import WEIGHTINGS
from recsys.config.als import ALSConfig, als_schema
from recsys.config.checks import (
    deferred,
    fail,
    int_at_least,
    is_int,
    is_number,
    number_at_least,
    one_of,
)
from recsys.data.tables import IdType

DATA_SOURCES = ("synthetic", "movielens", "lightgcn", "files")
SYNTHETIC_PRESETS = ("tiny", "small", "medium", "ml20m")
ID_TYPES = typing.get_args(IdType)
SPLIT_METHODS = ("given", "random", "leave_k_out", "temporal", "strong")
INDEX_TYPES = ("flat", "ivf", "hnsw", "factory")
INDEX_METRICS = ("ip", "cosine", "l2")
#: Metrics of ``recsys.eval.evaluate`` (used as ``<name>@<k>``; a test keeps this list in sync)
#: and rating metrics (explicit feedback only).
RANKING_METRICS = (
    "recall", "recall_capped", "precision", "ndcg", "map", "hitrate", "mrr",
    "coverage", "gini", "popularity_percentile", "novelty", "diversity",
)  # fmt: skip
RATING_METRICS = ("rmse", "mae")
#: Metrics where a smaller value is better (early stopping and sweepers minimise them).
MINIMIZE = frozenset(("rmse", "mae", "gini", "popularity_percentile"))


@dataclass
class DataConfig:
    """``data``: where the interactions come from.

    ``source`` picks the loader: ``synthetic`` (made in code from ``preset`` and the seed),
    ``movielens`` (a MovieLens folder: 100k, 1m, 20m, 25m, latest), ``lightgcn`` (a folder with
    ``train.txt`` / ``test.txt``), ``files`` (a delimited or Parquet file, with column names).
    ``chunk_rows``: ``files`` are read that many lines / rows at a time in two passes, so the raw
    table and the matrix are never in memory together (null: the whole file at once).
    ``encoding`` of text ``files``; ``id_type`` of their id columns: ``auto`` (integers when every
    id is one, else strings, logging the line that made them strings), ``int`` (a line with
    another id is an error) or ``str``.
    """

    source: str = "synthetic"
    preset: str = "small"
    path: str | None = None
    variant: str | None = None
    download: bool = False
    cache_dir: str | None = None
    train_file: str | None = None
    test_file: str | None = None
    test_path: str | None = None
    user_col: str = "user"
    item_col: str = "item"
    value_col: str | None = None
    timestamp_col: str | None = None
    sep: str | None = None
    header: bool = True
    chunk_rows: int | None = 1_000_000
    encoding: str = "utf-8"
    id_type: str = "auto"
    binarize: float | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    seed: int = II("seed")

    def __post_init__(self) -> None:
        one_of("data.source", self.source, DATA_SOURCES)
        if self.source == "synthetic":
            one_of("data.preset", self.preset, SYNTHETIC_PRESETS)
        elif not self.path and not (self.source == "movielens" and self.download):
            fail(
                "data.path",
                self.path,
                f"data.source={self.source} needs a path to the dataset (data.path=...)",
            )
        if self.binarize is not None:
            number_at_least("data.binarize", self.binarize, 0.0)
        if self.chunk_rows is not None:
            int_at_least("data.chunk_rows", self.chunk_rows, 1)
        one_of("data.id_type", self.id_type, ID_TYPES)
        int_at_least("data.min_user_interactions", self.min_user_interactions, 0)
        int_at_least("data.min_item_interactions", self.min_item_interactions, 0)


@dataclass
class SplitConfig:
    """``split``: how the test set is held out (``given``: the dataset's own train/test files).

    ``test_fraction`` is the per-user test share (``random``), the share of interactions after
    the global time cut (``temporal``) or each held-out user's evaluation share (``strong``, whose
    ``test_users`` is the fraction of users held out); ``leave_k_out`` holds out each user's ``k``
    latest interactions. Users with fewer than ``min_user_interactions`` stay in train.
    ``validation`` is the per-user fraction of the *training* interactions carved off for early
    stopping (0 turns the validation split, and with it early stopping, off).
    """

    method: str = "random"
    test_fraction: float = 0.2
    k: int = 1
    test_users: float = 0.1
    min_user_interactions: int = 2
    validation: float = 0.1
    seed: int = II("seed")

    def __post_init__(self) -> None:
        one_of("split.method", self.method, SPLIT_METHODS)
        if not (is_number(self.test_fraction) and 0.0 < self.test_fraction < 1.0):
            fail("split.test_fraction", self.test_fraction, "must be a number in (0, 1)")
        int_at_least("split.k", self.k, 1)
        if not (is_number(self.test_users) and 0.0 < self.test_users < 1.0):
            fail("split.test_users", self.test_users, "must be a fraction of users in (0, 1)")
        int_at_least("split.min_user_interactions", self.min_user_interactions, 1)
        if not (is_number(self.validation) and 0.0 <= self.validation < 1.0):
            fail("split.validation", self.validation, "must be a fraction in [0, 1)")


def nprobe_requirement(nlist: int) -> str:
    """What ``index.nprobe`` must be for `nlist` IVF lists: probing more lists than there are is
    probing all of them, an exhaustive search whose recall (1.0) says nothing about the index."""
    return (
        f"must be at most index.nlist={nlist} (probing every list is an exhaustive search); "
        f"lower index.nprobe or raise index.nlist"
    )


@dataclass
class IndexConfig:
    """``index``: the Faiss index the item embeddings are exported into (see recsys.index).

    ``nlist`` / ``nprobe`` left null take :func:`recsys.index.default_nlist` (about 4 sqrt(N))
    and :func:`recsys.index.default_nprobe` (about nlist / 16, where the benchmarks put recall@20
    at 0.93-0.99 on trained models). ``shards`` > 1 splits the items over that many Faiss
    sub-indexes of the same type (faiss ``IndexShards``; with ``gpu`` one shard per GPU when it
    equals the GPU count).
    """

    type: str = "flat"
    metric: str = "ip"
    nlist: int | None = None
    nprobe: int | None = None
    M: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    factory: str | None = None
    mips_to_l2: bool | None = None
    gpu: bool = False
    shards: int = 1

    def __post_init__(self) -> None:
        one_of("index.type", self.type, INDEX_TYPES)
        one_of("index.metric", self.metric, INDEX_METRICS)
        if self.nlist is not None:
            int_at_least("index.nlist", self.nlist, 1)
        if self.nprobe is not None:
            int_at_least("index.nprobe", self.nprobe, 1)
            if self.nlist is not None and self.nprobe > self.nlist:
                fail("index.nprobe", self.nprobe, nprobe_requirement(self.nlist))
        int_at_least("index.M", self.M, 2)
        int_at_least("index.ef_construction", self.ef_construction, 1)
        int_at_least("index.ef_search", self.ef_search, 1)
        int_at_least("index.shards", self.shards, 1)
        if self.type == "factory" and not self.factory:
            fail("index.factory", self.factory, "index.type=factory needs a Faiss factory string")


@dataclass
class EvalConfig:
    """``eval``: metrics, the objective returned to sweepers, and early stopping.

    ``every`` evaluates on the validation split every that many epochs (0: never, no early
    stopping); training stops after ``patience`` evaluations without improvement (0: never stop
    early) and keeps the best evaluated epoch's factors. ``refit`` retrains on the whole training
    split for the best number of epochs afterwards. ``k`` holds the cut-offs of the test metrics
    (the candidate depths 100 and 500 by default: one top-max(k) ranking serves them all);
    validation ranks only as deep as the objective's k. ``metrics`` limits the test metrics
    (null: all of ``recsys.eval``; validation computes only the objective's). ``rating_clip``
    clips explicit predictions to the rating scale (e.g. [1, 5]) before rmse / mae. ``report``
    writes ``report.md`` and its plots into the run folder. ``test`` false makes the run a
    tuning trial: the test split is never evaluated; the final model (best epoch, posterior
    average) is evaluated on the validation split instead, and those metrics
    (``validation_<metric>`` in metrics.json) and that objective are the run's, so a
    hyperparameter search never sees the test split.
    """

    k: list[int] = field(default_factory=lambda: [10, 20, 100, 500])
    objective: str = "recall@20"
    metrics: list[str] | None = None
    rating_clip: list[float] | None = None
    every: int = 1
    patience: int = 3
    refit: bool = False
    max_users: int | None = None
    batch_size: int = 4096
    report: bool = True
    test: bool = True

    def __post_init__(self) -> None:
        if not self.k:
            fail("eval.k", self.k, "must be a non-empty list of integers >= 1, e.g. [10,20]")
        for k in self.k:
            if not is_int(k) or k < 1:
                fail("eval.k", self.k, "must be a non-empty list of integers >= 1, e.g. [10,20]")
        if self.objective in RATING_METRICS:
            pass
        else:
            name, _, at = str(self.objective).partition("@")
            allowed = [f"{m}@{k}" for m in RANKING_METRICS for k in self.k] + list(RATING_METRICS)
            if name not in RANKING_METRICS or not at.isdigit() or int(at) not in self.k:
                fail(
                    "eval.objective",
                    self.objective,
                    f"must be <metric>@<k> with k in eval.k, one of {', '.join(allowed)}",
                )
        if self.metrics is not None:
            for name in self.metrics:
                if name not in RANKING_METRICS:
                    fail(
                        "eval.metrics",
                        self.metrics,
                        f"names must be in {', '.join(RANKING_METRICS)}",
                    )
            name = str(self.objective).partition("@")[0]
            if name in RANKING_METRICS and name not in self.metrics:
                fail("eval.metrics", self.metrics, f"must include the objective's metric {name}")
        if self.rating_clip is not None and (
            len(self.rating_clip) != 2 or not self.rating_clip[0] < self.rating_clip[1]
        ):
            fail(
                "eval.rating_clip", self.rating_clip, "must be [low, high] with low < high, or null"
            )
        int_at_least("eval.every", self.every, 0)
        int_at_least("eval.patience", self.patience, 0)
        if self.max_users is not None:
            int_at_least("eval.max_users", self.max_users, 1)
        int_at_least("eval.batch_size", self.batch_size, 1)

    @property
    def minimize(self) -> bool:
        """Whether a smaller objective is better (rmse, mae)."""
        return self.objective in MINIMIZE


@dataclass
class TrackingConfig:
    """``tracking``: what goes into the TensorBoard event files under ``<run dir>/tb``."""

    enabled: bool = True
    histograms: bool = True
    projector: bool = True
    projector_max_items: int = 2000
    hparams: bool = True

    def __post_init__(self) -> None:
        int_at_least("tracking.projector_max_items", self.projector_max_items, 1)


@dataclass
class CheckpointConfig:
    """``checkpoint``: factors are saved atomically every ``every`` epochs (0: never)."""

    every: int = 5

    def __post_init__(self) -> None:
        int_at_least("checkpoint.every", self.every, 0)


@dataclass
class TrainConfig:
    """The whole training job (``conf/config.yaml``).

    ``run_dir`` names an existing run folder to continue (implies ``resume``); ``resume=true``
    alone continues the newest unfinished run under ``outputs/``. ``save_train`` keeps the
    training interactions (``train.npz``: seen items, id maps, titles) for
    ``scripts/recommend.py``. ``export`` false writes no model.npz, train.npz or index
    (tuning trials: at 1024 factors each would write about 300 MB); metrics.json, metadata.json
    and the report are still written. ``plugins`` are modules imported before the config is checked,
    whose weightings and solvers register themselves (their keys join ``als.*``).
    """

    als: ALSConfig = field(default_factory=ALSConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0
    resume: bool = False
    run_dir: str | None = None
    progress: bool = True
    save_train: bool = True
    export: bool = True
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if deferred(self.als.seed):  # built in Python with II defaults: nothing to cross-check
            return
        rating = self.eval.objective in RATING_METRICS
        if rating and not WEIGHTINGS.get(self.als.weighting).uses_global_mean:
            rated = "|".join(n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).uses_global_mean)
            fail(
                "eval.objective",
                self.eval.objective,
                f"rating metrics need als.weighting={rated}; use a ranking metric such as "
                f"recall@{self.eval.k[-1]}",
            )
        d = self.data
        if (d.train_file is None) != (d.test_file is None) and d.source == "movielens":
            fail("data.test_file", d.test_file, "give data.train_file and data.test_file together")
        own_test = (
            d.source == "lightgcn"
            or (d.source == "movielens" and d.train_file is not None)
            or (d.source == "files" and d.test_path is not None)
        )
        if own_test and self.split.method != "given":
            fail(
                "split.method",
                self.split.method,
                f"data.source={d.source} comes with its own test set here; use split=given",
            )
        if not own_test and self.split.method == "given":
            fail(
                "split.method",
                "given",
                f"data.source={d.source} has no test set of its own here; use split=random, "
                "leave_k_out, temporal or strong (or give data.test_file / data.test_path)",
            )
        if self.eval.refit and self.eval.every == 0:
            fail("eval.refit", True, "needs eval.every >= 1 (refit uses the best evaluated epoch)")
        if not self.eval.test:
            self._check_trial()

    def _check_trial(self) -> None:
        """``eval.test=false`` (a tuning trial) needs validation data and no refit."""
        if self.split.validation <= 0:
            fail(
                "split.validation",
                self.split.validation,
                "eval.test=false (a tuning trial) evaluates on validation data: set "
                "split.validation > 0, e.g. 0.1 (for Gowalla use data=lightgcn data.path=... "
                "split=given, not +experiment=gowalla, which pins a refit without validation)",
            )
        if self.eval.refit:
            fail(
                "eval.refit",
                True,
                "refit trains on the validation interactions, which eval.test=false (a tuning "
                "trial) evaluates on: set eval.refit=false",
            )


_BUILT: dict[type, type] = {}


def train_schema() -> type[TrainConfig]:
    """The job's schema with the ``als`` schema of the parts registered now (plugins included)."""
    als = als_schema()
    if als is ALSConfig:
        return TrainConfig
    if als not in _BUILT:
        _BUILT[als] = dataclasses.make_dataclass(
            "TrainConfig",
            [("als", als, field(default_factory=als))],
            bases=(TrainConfig,),
            namespace={"__module__": __name__, "__doc__": TrainConfig.__doc__},
        )
    return _BUILT[als]
