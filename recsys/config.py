"""Configuration schemas of the training pipeline, and their validation.

One dataclass per Hydra config group (``als``, ``data``, ``split``, ``index``, ``eval``) plus the
top-level :class:`TrainConfig`. The YAML files under ``conf/`` extend these schemas in their
defaults lists, so Hydra rejects a typo'd key or a wrong type while composing; the ranges and the
allowed names are checked in ``__post_init__``, which runs when :func:`validate` turns the composed
config into dataclass instances. Every problem becomes a :class:`ConfigError` whose message is one
line naming the key, the bad value and what is allowed, e.g.
``als.n_factors=0: must be an integer >= 1``.

This is the only module of the package that knows about Hydra, and only inside
:func:`register_configs` and :func:`check_overrides` (imported lazily), so
``recsys.pipeline`` can use the schemas without importing Hydra.
"""

import dataclasses
import datetime as _dt
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import II, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "ALSConfig",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "IndexConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainConfig",
    "check_overrides",
    "format_error",
    "register_configs",
    "repo_root",
    "validate",
]

#: The repository root (the folder holding ``conf/`` and ``recsys/``): relative dataset paths in
#: the shipped configs (``${repo:../shared/data/gowalla}``) resolve against it, not the cwd.
REPO_ROOT = Path(__file__).resolve().parents[1]

WEIGHTINGS = ("hkv", "ials", "explicit")
SOLVERS = ("cholesky", "cg")
DTYPES = ("float32", "float64")
DATA_SOURCES = ("synthetic", "movielens", "lightgcn", "files")
SYNTHETIC_PRESETS = ("tiny", "small", "medium", "ml20m")
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


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line naming the key and what to fix."""


def _fail(key: str, value: Any, requirement: str) -> None:
    raise ConfigError(f"{key}={_show(value)}: {requirement}")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_at_least(key: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        _fail(key, value, f"must be an integer >= {low}")


def _number_at_least(key: str, value: Any, low: float, *, strict: bool = False) -> None:
    ok = _is_number(value) and value == value and (value > low if strict else value >= low)
    if not ok:
        _fail(key, value, f"must be a number {'>' if strict else '>='} {low:g}")


def _one_of(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        _fail(key, value, f"must be one of {', '.join(allowed)}")


def _deferred(value: Any) -> bool:
    """True for a value OmegaConf has not resolved yet (a dataclass built with an II default)."""
    return isinstance(value, str) and "${" in value


# ------------------------------------------------------------------------------ group schemas
@dataclass
class ALSConfig:
    """``als``: hyperparameters of :class:`recsys.als.ALS` (see its docstring for the maths).

    ``distributed`` trains one model across the processes of a ``torchrun`` job (users and items
    sharded over the ranks, see :mod:`recsys.als.distributed`); a rank that waits longer than
    ``distributed_timeout_s`` seconds for the others fails with an error instead of hanging.
    """

    n_factors: int = 64
    regularization: float = 0.01
    bias_regularization: float | None = None
    iterations: int = 15
    weighting: str = "hkv"
    alpha: float = 1.0
    alpha0: float = 0.01
    reg_exponent: float | None = None
    use_bias: bool = False
    solver: str = "cholesky"
    cg_steps: int = 3
    device: str = "auto"
    dtype: str = "float32"
    memory_budget_mb: float = 1024.0
    init_std: float | None = None
    calculate_loss: bool = True
    distributed: bool = False
    distributed_timeout_s: float = 600.0
    posterior_samples: int = 0
    posterior_burn_in: int = 5
    posterior_prior: str = "learned"
    seed: int = II("seed")

    def __post_init__(self) -> None:
        _int_at_least("als.n_factors", self.n_factors, 1)
        _number_at_least("als.regularization", self.regularization, 0.0)
        if self.bias_regularization is not None:
            _number_at_least("als.bias_regularization", self.bias_regularization, 0.0)
        _int_at_least("als.iterations", self.iterations, 1)
        _one_of("als.weighting", self.weighting, WEIGHTINGS)
        _number_at_least("als.alpha", self.alpha, 0.0)
        _number_at_least("als.alpha0", self.alpha0, 0.0)
        if self.reg_exponent is not None:
            _number_at_least("als.reg_exponent", self.reg_exponent, 0.0)
        _one_of("als.solver", self.solver, SOLVERS)
        _int_at_least("als.cg_steps", self.cg_steps, 1)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            _fail("als.device", self.device, "must be one of auto, cpu, cuda, cuda:<n>")
        _one_of("als.dtype", self.dtype, DTYPES)
        _number_at_least("als.memory_budget_mb", self.memory_budget_mb, 0.0, strict=True)
        if self.init_std is not None:
            _number_at_least("als.init_std", self.init_std, 0.0, strict=True)
        _number_at_least("als.distributed_timeout_s", self.distributed_timeout_s, 0.0, strict=True)
        _int_at_least("als.posterior_samples", self.posterior_samples, 0)
        _int_at_least("als.posterior_burn_in", self.posterior_burn_in, 0)
        if self.posterior_prior not in ("learned", "fixed"):
            _fail("als.posterior_prior", self.posterior_prior, "must be one of learned, fixed")
        if self.posterior_samples and self.solver != "cholesky":
            _fail("als.posterior_samples", self.posterior_samples, "needs als.solver=cholesky")
        if self.posterior_samples and self.distributed:
            _fail(
                "als.posterior_samples",
                self.posterior_samples,
                "runs in one process; set als.distributed=false",
            )
        if self.use_bias and not (
            self.regularization > 0
            and (self.bias_regularization is None or self.bias_regularization > 0)
        ):
            _fail(
                "als.use_bias",
                True,
                "needs als.regularization > 0 and als.bias_regularization > 0 (or null)",
            )


@dataclass
class DataConfig:
    """``data``: where the interactions come from.

    ``source`` picks the loader: ``synthetic`` (made in code from ``preset`` and the seed),
    ``movielens`` (a MovieLens folder: 100k, 1m, 20m, 25m, latest), ``lightgcn`` (a folder with
    ``train.txt`` / ``test.txt``), ``files`` (a delimited or Parquet file, with column names).
    ``chunk_rows``: ``files`` are read that many lines / rows at a time in two passes, so the raw
    table and the matrix are never in memory together (null: the whole file at once).
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
    binarize: float | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    seed: int = II("seed")

    def __post_init__(self) -> None:
        _one_of("data.source", self.source, DATA_SOURCES)
        if self.source == "synthetic":
            _one_of("data.preset", self.preset, SYNTHETIC_PRESETS)
        elif not self.path and not (self.source == "movielens" and self.download):
            _fail(
                "data.path",
                self.path,
                f"data.source={self.source} needs a path to the dataset (data.path=...)",
            )
        if self.binarize is not None:
            _number_at_least("data.binarize", self.binarize, 0.0)
        if self.chunk_rows is not None:
            _int_at_least("data.chunk_rows", self.chunk_rows, 1)
        _int_at_least("data.min_user_interactions", self.min_user_interactions, 0)
        _int_at_least("data.min_item_interactions", self.min_item_interactions, 0)


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
        _one_of("split.method", self.method, SPLIT_METHODS)
        if not (_is_number(self.test_fraction) and 0.0 < self.test_fraction < 1.0):
            _fail("split.test_fraction", self.test_fraction, "must be a number in (0, 1)")
        _int_at_least("split.k", self.k, 1)
        if not (_is_number(self.test_users) and 0.0 < self.test_users < 1.0):
            _fail("split.test_users", self.test_users, "must be a fraction of users in (0, 1)")
        _int_at_least("split.min_user_interactions", self.min_user_interactions, 1)
        if not (_is_number(self.validation) and 0.0 <= self.validation < 1.0):
            _fail("split.validation", self.validation, "must be a fraction in [0, 1)")


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
        _one_of("index.type", self.type, INDEX_TYPES)
        _one_of("index.metric", self.metric, INDEX_METRICS)
        if self.nlist is not None:
            _int_at_least("index.nlist", self.nlist, 1)
        if self.nprobe is not None:
            _int_at_least("index.nprobe", self.nprobe, 1)
        _int_at_least("index.M", self.M, 2)
        _int_at_least("index.ef_construction", self.ef_construction, 1)
        _int_at_least("index.ef_search", self.ef_search, 1)
        _int_at_least("index.shards", self.shards, 1)
        if self.type == "factory" and not self.factory:
            _fail("index.factory", self.factory, "index.type=factory needs a Faiss factory string")


@dataclass
class EvalConfig:
    """``eval``: metrics, the objective returned to sweepers, and early stopping.

    ``every`` evaluates on the validation split every that many epochs (0: never, no early
    stopping); training stops after ``patience`` evaluations without improvement (0: never stop
    early) and keeps the best evaluated epoch's factors. ``refit`` retrains on the whole training
    split for the best number of epochs afterwards. ``metrics`` limits the test metrics (null:
    all of ``recsys.eval``; validation computes only the objective's). ``rating_clip`` clips
    explicit predictions to the rating scale (e.g. [1, 5]) before rmse / mae.
    """

    k: list[int] = field(default_factory=lambda: [10, 20])
    objective: str = "recall@20"
    metrics: list[str] | None = None
    rating_clip: list[float] | None = None
    every: int = 1
    patience: int = 3
    refit: bool = False
    max_users: int | None = None
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if not self.k:
            _fail("eval.k", self.k, "must be a non-empty list of integers >= 1, e.g. [10,20]")
        for k in self.k:
            if not _is_int(k) or k < 1:
                _fail("eval.k", self.k, "must be a non-empty list of integers >= 1, e.g. [10,20]")
        if self.objective in RATING_METRICS:
            pass
        else:
            name, _, at = str(self.objective).partition("@")
            allowed = [f"{m}@{k}" for m in RANKING_METRICS for k in self.k] + list(RATING_METRICS)
            if name not in RANKING_METRICS or not at.isdigit() or int(at) not in self.k:
                _fail(
                    "eval.objective",
                    self.objective,
                    f"must be <metric>@<k> with k in eval.k, one of {', '.join(allowed)}",
                )
        if self.metrics is not None:
            for name in self.metrics:
                if name not in RANKING_METRICS:
                    _fail(
                        "eval.metrics",
                        self.metrics,
                        f"names must be in {', '.join(RANKING_METRICS)}",
                    )
            name = str(self.objective).partition("@")[0]
            if name in RANKING_METRICS and name not in self.metrics:
                _fail("eval.metrics", self.metrics, f"must include the objective's metric {name}")
        if self.rating_clip is not None and (
            len(self.rating_clip) != 2 or not self.rating_clip[0] < self.rating_clip[1]
        ):
            _fail(
                "eval.rating_clip", self.rating_clip, "must be [low, high] with low < high, or null"
            )
        _int_at_least("eval.every", self.every, 0)
        _int_at_least("eval.patience", self.patience, 0)
        if self.max_users is not None:
            _int_at_least("eval.max_users", self.max_users, 1)
        _int_at_least("eval.batch_size", self.batch_size, 1)

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
        _int_at_least("tracking.projector_max_items", self.projector_max_items, 1)


@dataclass
class CheckpointConfig:
    """``checkpoint``: factors are saved atomically every ``every`` epochs (0: never)."""

    every: int = 5

    def __post_init__(self) -> None:
        _int_at_least("checkpoint.every", self.every, 0)


@dataclass
class TrainConfig:
    """The whole training job (``conf/config.yaml``).

    ``run_dir`` names an existing run folder to continue (implies ``resume``); ``resume=true``
    alone continues the newest unfinished run under ``outputs/``. ``save_train`` keeps the
    training interactions (``train.npz``: seen items, id maps, titles) for
    ``scripts/recommend.py``.
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

    def __post_init__(self) -> None:
        if _deferred(self.als.seed):  # built in Python with II defaults: nothing to cross-check
            return
        rating = self.eval.objective in RATING_METRICS
        if rating and self.als.weighting != "explicit":
            _fail(
                "eval.objective",
                self.eval.objective,
                "rating metrics need als.weighting=explicit; use a ranking metric such as "
                f"recall@{self.eval.k[-1]}",
            )
        d = self.data
        if (d.train_file is None) != (d.test_file is None) and d.source == "movielens":
            _fail("data.test_file", d.test_file, "give data.train_file and data.test_file together")
        own_test = (
            d.source == "lightgcn"
            or (d.source == "movielens" and d.train_file is not None)
            or (d.source == "files" and d.test_path is not None)
        )
        if own_test and self.split.method != "given":
            _fail(
                "split.method",
                self.split.method,
                f"data.source={d.source} comes with its own test set here; use split=given",
            )
        if not own_test and self.split.method == "given":
            _fail(
                "split.method",
                "given",
                f"data.source={d.source} has no test set of its own here; use split=random, "
                "leave_k_out, temporal or strong (or give data.test_file / data.test_path)",
            )
        if self.eval.refit and self.eval.every == 0:
            _fail("eval.refit", True, "needs eval.every >= 1 (refit uses the best evaluated epoch)")


# ------------------------------------------------------------------------------ validation
def validate(cfg: Any) -> TrainConfig:
    """Check a composed config (DictConfig, dict or TrainConfig) and return a :class:`TrainConfig`.

    Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` with a one-line
    message. Interpolations are resolved. The input is not modified.
    """
    if isinstance(cfg, TrainConfig):
        cfg = OmegaConf.structured(cfg)
    try:
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=False)
        schema = OmegaConf.structured(TrainConfig)
        merged = OmegaConf.merge(schema, cfg)
        result = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        raise ConfigError(format_error(err)) from None
    assert isinstance(result, TrainConfig)
    return result


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The plain, resolved mapping of a :class:`TrainConfig` (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


#: The Hydra config groups (``group=option`` on the command line); each YAML extends base_<group>.
GROUPS = ("als", "data", "split", "index", "eval")

_SCHEMAS: dict[str, type] = {
    "als": ALSConfig,
    "data": DataConfig,
    "split": SplitConfig,
    "index": IndexConfig,
    "eval": EvalConfig,
    "tracking": TrackingConfig,
    "checkpoint": CheckpointConfig,
}


def _allowed_keys(parent: str) -> list[str] | None:
    schema = TrainConfig if parent == "" else _SCHEMAS.get(parent)
    if schema is None:
        return None
    return [f.name for f in dataclasses.fields(schema)]


def _root_cause(err: BaseException) -> BaseException:
    """The first ConfigError or OmegaConf error in `err`'s ``raise ... from`` chain, else `err`."""
    node: BaseException | None = err
    for _ in range(20):
        if node is None:
            break
        if isinstance(node, ConfigError | OmegaConfBaseException):
            return node
        node = node.__cause__
    return err


def format_error(err: BaseException) -> str:
    """One line saying what is wrong with a config, for Hydra and OmegaConf errors alike."""
    if isinstance(err, ConfigError):
        return str(err)
    options = getattr(err, "options", None)
    missing = getattr(err, "missing_cfg_file", None)
    if missing is not None or options is not None:  # hydra MissingConfigException: bad group
        group, _, name = str(missing or "").rpartition("/")
        shown = sorted(o for o in (options or []) if not o.startswith("base_"))
        if group:
            return f"{group}={name}: unknown option; must be one of {', '.join(shown)}"
        return str(err).splitlines()[0]
    cause = _root_cause(err)
    if isinstance(cause, ConfigError):
        return str(cause)
    if isinstance(cause, OmegaConfBaseException):
        full_key = getattr(cause, "full_key", None) or ""
        first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        key_match = re.match(r"Key '([^']+)' not in '", first)
        if key_match or "not in struct" in first or "is not in struct" in first:
            parent = full_key.rpartition(".")[0]
            allowed = _allowed_keys(parent)
            where = f"in {parent}" if parent else "at the top level"
            extra = f"; allowed keys {where}: {', '.join(allowed)}" if allowed else ""
            return f"{full_key or first}: unknown key{extra}"
        value = getattr(cause, "value", None)
        shown = f"={_show(value)}" if value is not None else ""
        return f"{full_key}{shown}: {_describe_type_error(first)}" if full_key else first
    text = str(err).splitlines()
    return " ".join(line.strip() for line in text if line.strip())


def _describe_type_error(message: str) -> str:
    m = re.search(r"could not be converted to (\w+)", message)
    if m:
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}
        return f"must be {kind.get(m.group(1), m.group(1))}"
    if "is not a valid bool" in message:
        return "must be true or false"
    if "is not a ListConfig" in message:
        return "must be a list, e.g. [10,20]"
    if "is not Optional" in message or "non-optional" in message.lower():
        return "must not be null"
    return message


# ------------------------------------------------------------------------------ hydra glue
def _run_dir_resolver(run_dir: Any, resume: Any, root: str, stamp: str) -> str:
    """``hydra.run.dir``: ``run_dir`` when given; with ``resume`` the newest unfinished run."""
    if run_dir:
        return str(run_dir)
    if resume in (True, "true", "True"):
        latest = latest_unfinished_run(Path(root))
        if latest is not None:
            return str(latest)
    return str(Path(root) / stamp)


def latest_unfinished_run(root: Path) -> Path | None:
    """The newest ``<root>/<date>/<time>`` folder holding a checkpoint but no ``metrics.json``."""
    if not root.is_dir():
        return None
    found = [
        p.parent.parent
        for p in root.glob("*/*/checkpoints/LATEST")
        if not (p.parent.parent / "metrics.json").exists()
    ]
    return max(found, key=lambda p: (p.parent.name, p.name), default=None)


def _repo_resolver(relative: str) -> str:
    return str((REPO_ROOT / relative).resolve())


def repo_root() -> Path:
    """The repository root against which ``${repo:...}`` paths resolve."""
    return REPO_ROOT


def register_resolvers() -> None:
    """``${repo:rel/path}`` and ``${recsys_run_dir:...}``; idempotent."""
    for name, fn in (("repo", _repo_resolver), ("recsys_run_dir", _run_dir_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (``base_<group>``) and the resolvers."""
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    store = ConfigStore.instance()
    store.store(name="base_config", node=TrainConfig)
    for group in GROUPS:
        store.store(group=group, name=f"base_{group}", node=_SCHEMAS[group])


def _expand(overrides: Sequence[str], multirun: bool) -> tuple[list[list[str]], str | None]:
    """The override lists to check: one per value of every sweep, others at their first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        return [], " ".join(str(err).split())
    base: list[str] = []
    sweeps: list[list[str]] = []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            if not multirun:
                return [], (
                    f"{o.input_line}: a sweep over several values needs -m (--multirun); for a "
                    "list write key=[a,b], for a string with commas quote it"
                )
            if not o.is_discrete_sweep():  # interval(...) for Optuna: checked when the job runs
                continue
            values = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            if values:
                base.append(values[0])
                sweeps.append(values)
        else:
            base.append(str(o.input_line))
    combos = [base]
    for values in sweeps:
        first = values[0]
        for v in values[1:]:
            combos.append([v if item == first else item for item in base])
    return combos, None


def check_overrides(
    overrides: Sequence[str],
    *,
    config_dir: str | os.PathLike[str],
    config_name: str = "config",
    multirun: bool = False,
) -> str | None:
    """Compose and validate the config for command-line `overrides`; the one-line error or None.

    Used by the scripts before handing over to ``@hydra.main``, whose own messages span several
    lines: every value of a sweep is checked, so ``-m als.n_factors=8,0`` fails before any job.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    combos, problem = _expand(overrides, multirun)
    if problem:
        return problem
    for combo in combos:
        initialised = GlobalHydra.instance().is_initialized()
        if initialised:
            GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(
                config_dir=str(Path(config_dir).resolve()), version_base="1.3"
            ):
                cfg = compose(config_name=config_name, overrides=combo)
            validate(cfg)
        except ConfigError as err:
            return str(err)
        except Exception as err:  # hydra composition errors
            return format_error(err)
    return None


def now_stamp() -> str:
    """``YYYY-MM-DD/HH-MM-SS``, the layout Hydra uses for its run folders."""
    return _dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"als": {"n_factors": 8}}`` -> ``{"als.n_factors": 8}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def differing_keys(a: dict[str, Any], b: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two nested mappings (ignoring `ignore` prefixes)."""
    fa, fb = flatten(a), flatten(b)
    skip = tuple(ignore)
    keys = sorted(set(fa) | set(fb))
    return [
        k
        for k in keys
        if fa.get(k) != fb.get(k) and not any(k == s or k.startswith(s + ".") for s in skip)
    ]
