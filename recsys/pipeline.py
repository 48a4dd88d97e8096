"""The training pipeline behind ``scripts/train.py``, usable without Hydra.

``run(cfg, output_dir)`` does, in order:

1. validate the config (:func:`recsys.config.validate`; a bad value fails before data loads);
2. load the data and split it (``cfg.data``, ``cfg.split``), then carve a validation split from
   the training part (``cfg.split.validation``) for early stopping;
3. train :class:`recsys.als.ALS`, one epoch at a time: TensorBoard scalars and histograms, a
   progress bar, an evaluation on the validation split every ``eval.every`` epochs, early
   stopping after ``eval.patience`` evaluations without improvement (the best epoch's factors
   are kept), an atomic checkpoint every ``checkpoint.every`` epochs;
4. optionally refit on the whole training split for the best number of epochs (``eval.refit``);
5. evaluate on the test split, export the item embeddings into the configured Faiss index;
6. write the artifacts into `output_dir`, each atomically (temp file + ``os.replace``), the model
   first and ``metrics.json`` last, so a killed run never leaves a half-written file and a run
   folder with ``metrics.json`` is complete.

Artifacts: ``model.npz`` (``ALS.save``), ``items.faiss`` + ``items.faiss.json`` (the index and its
sidecar), ``metrics.json`` (flat ``{"recall@20": ..., "train_seconds": ...}``), ``metadata.json``
(resolved config, data statistics, versions, device, git commit, loss history, evaluations),
``tb/`` (TensorBoard) and ``checkpoints/`` (removed when the run completes).

Distributed (``als.distributed=true`` under ``torchrun --nproc_per_node=N``): every rank joins
the process group, loads and splits the same data and trains its shard of users and items
(:mod:`recsys.als.distributed`); rank 0 alone evaluates, checkpoints, logs, shows progress and
writes the artifacts into its run folder, which every rank uses (so a restarted job resumes from
its checkpoint); the others wait for rank 0's test objective and return it.

Resuming (``cfg.resume`` or ``cfg.run_dir``): training continues from the newest checkpoint in
`output_dir` with the configuration saved in it and, on the CPU, ends with the same factors as an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys.config import (
    RATING_METRICS,
    ConfigError,
    TrainConfig,
    differing_keys,
    flatten,
    repo_root,
    to_dict,
    validate,
)
from recsys.io import atomic_path
from recsys.tracking import Tracker

__all__ = [
    "CHECKPOINT_DIR",
    "INDEX_FILE",
    "METADATA_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "TB_DIR",
    "Checkpointer",
    "RunResult",
    "atomic_write_json",
    "atomic_write_text",
    "run",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.npz"
TRAIN_FILE = "train.npz"
INDEX_FILE = "items.faiss"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"

#: Keys a resumed run may change; everything else must match the checkpoint's configuration.
RESUME_MUTABLE = (
    "resume",
    "run_dir",
    "progress",
    "save_train",
    "checkpoint",
    "tracking",
    "als.device",
    "als.distributed",
    "als.distributed_timeout_s",
)

#: Called after every epoch with (epoch, loss, seconds, model); for tests and notebooks.
EpochHook = Callable[[int, float, float, Any], Any]


# ------------------------------------------------------------------------------ atomic files
def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` atomically (fsync'd temp file, then ``os.replace``)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _strict_json(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers (Python would write NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented, strict JSON (non-finite numbers as null) to `path` atomically."""
    text = json.dumps(_strict_json(obj), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


# ------------------------------------------------------------------------------ checkpoints
class Checkpointer:
    """Atomic training checkpoints in ``<run dir>/checkpoints``.

    Each checkpoint is a folder ``epoch-NNNNN`` with ``model.npz`` (the factors after that
    epoch, ``ALS.save``), optionally ``best.npz`` (the best evaluated factors so far, when they
    are from an earlier epoch) and ``state.json`` (early-stopping state, evaluations, the
    resolved config, elapsed seconds). It is written under a temporary name and renamed into
    place; then the one-line file ``LATEST`` is replaced atomically to point at it, and older
    checkpoint folders are removed. A kill at any moment leaves ``LATEST`` naming a complete
    checkpoint (or no ``LATEST`` at all).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @property
    def latest_file(self) -> Path:
        return self.folder / "LATEST"

    def save(self, epoch: int, model: Any, best: Any | None, state: Mapping[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}"
        final = self.folder / name
        if not final.exists():
            tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{name}."))
            try:
                model.save(tmp / "model.npz")
                if best is not None:
                    best.save(tmp / "best.npz")
                atomic_write_json(tmp / "state.json", dict(state))
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        atomic_write_text(self.latest_file, name + "\n")
        for other in self.folder.iterdir():
            if other.is_dir() and other.name != name:
                shutil.rmtree(other, ignore_errors=True)
        return final

    def latest(self) -> Path | None:
        """The folder of the newest complete checkpoint, or None."""
        if not self.latest_file.is_file():
            return None
        folder = self.folder / self.latest_file.read_text().strip()
        return folder if (folder / "state.json").is_file() else None

    def load(self, device: str = "cpu") -> tuple[Any, Any | None, dict[str, Any]] | None:
        """``(model, best_or_None, state)`` from the newest checkpoint, or None."""
        from recsys.als import ALS

        folder = self.latest()
        if folder is None:
            return None
        state = json.loads((folder / "state.json").read_text())
        model = ALS.load(folder / "model.npz", device=device)
        best = (
            ALS.load(folder / "best.npz", device=device)
            if (folder / "best.npz").is_file()
            else None
        )
        return model, best, state

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# ------------------------------------------------------------------------------ early stopping
@dataclass
class EarlyStopping:
    """Tracks the best evaluated epoch; `should_stop` after `patience` evaluations without gain."""

    patience: int
    minimize: bool = False
    best_value: float | None = None
    best_epoch: int | None = None
    bad_evaluations: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    def update(self, epoch: int, value: float, metrics: Mapping[str, float]) -> bool:
        """Record an evaluation; True when it is the best so far."""
        self.evaluations.append({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        better = self.best_value is None or (
            value < self.best_value if self.minimize else value > self.best_value
        )
        if better and math.isfinite(value):
            self.best_value, self.best_epoch, self.bad_evaluations = float(value), epoch, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evaluations >= self.patience

    def state(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_evaluations": self.bad_evaluations,
            "evaluations": list(self.evaluations),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_epoch = state.get("best_epoch")
        self.bad_evaluations = int(state.get("bad_evaluations", 0))
        self.evaluations = list(state.get("evaluations", []))


# ------------------------------------------------------------------------------ data
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
        )
    if isinstance(result, rdata.Split):
        return result.train, result
    return result, None


def prepare_data(cfg: TrainConfig) -> Prepared:
    """Load, clean, split and carve the validation split, as configured."""
    from recsys.data import (
        Split,
        leave_k_out,
        random_holdout,
        strong_generalization,
        temporal_split,
        validation_split,
    )

    interactions, given = load_data(cfg)
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
    full_stats = interactions.stats()
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
        split = Split(interactions, given_test, None, {"method": "given", **given.report})
    elif s.method == "random":
        split = random_holdout(interactions, s.test_fraction, seed=s.seed, min_interactions=min_n)
    elif s.method == "leave_k_out":
        split = leave_k_out(interactions, s.k, seed=s.seed, min_interactions=max(s.k + 1, min_n))
    elif s.method == "temporal":
        split = temporal_split(interactions, test_fraction=s.test_fraction)
    else:
        split = strong_generalization(
            interactions,
            test_users=s.test_users,
            eval_fraction=s.test_fraction,
            seed=s.seed,
            min_interactions=max(2, min_n),
        )
    fit, validation = split.train, None
    if s.validation > 0 and cfg.eval.every > 0:
        carved = validation_split(
            split.train, "random", test_fraction=s.validation, seed=s.seed + 1,
            min_interactions=max(2, min_n),
        )  # fmt: skip
        fit, validation = carved.train, carved.test
    report = dict(split.report or {})
    if validation is not None:
        report["validation"] = dict(carved.report)
    return Prepared(full_stats, split.train, split.test, split.fold_in, fit, validation, report)


# ------------------------------------------------------------------------------ evaluation
def _user_rows(matrix: sp.csr_matrix) -> np.ndarray:
    return np.flatnonzero(np.diff(matrix.indptr) > 0)


def evaluate_model(
    model: Any,
    cfg: TrainConfig,
    seen: sp.csr_matrix,
    truth: sp.csr_matrix,
    *,
    fold_in: sp.csr_matrix | None = None,
    max_users: int | None = None,
    seed: int = 0,
    objective_only: bool = False,
) -> dict[str, float]:
    """Metrics of `model` against `truth` (users x items), `seen` items excluded from rankings.

    Ranking metrics over all items for every model (``recsys.eval.evaluate``); rmse and mae too
    for explicit ones. `fold_in` (strong generalization) holds the histories of held-out users:
    their vectors come from ``model.fold_in`` and their history is what is excluded. `max_users`
    evaluates a random sample of the users with held-out items; `objective_only` computes just
    the metric early stopping needs.
    """
    from recsys.eval import evaluate, rating_metrics

    truth = sp.csr_matrix(truth)
    users = _user_rows(truth)
    if max_users is not None and users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    if users.size == 0:
        raise ConfigError("the evaluation split holds no interactions; check the split settings")
    if fold_in is not None:
        seen_rows = sp.csr_matrix(fold_in)[users]
        user_vectors = model.fold_in(seen_rows)
        offsets = None
    else:
        seen_rows = sp.csr_matrix(seen)[users]
        user_vectors = model.user_embeddings(users)
        offsets = model.user_offsets(users)
    objective = cfg.eval.objective
    name = objective.partition("@")[0]
    rating = name in RATING_METRICS
    if objective_only:
        names: list[str] | None = [] if rating else [name]
    else:
        names = None if cfg.eval.metrics is None else list(cfg.eval.metrics)
    metrics: dict[str, float] = {}
    if names is None or names:
        popularity = np.bincount(sp.csr_matrix(seen).indices, minlength=truth.shape[1])
        found = evaluate(
            user_vectors,
            model.item_embeddings(),
            seen_rows,
            truth[users],
            ks=list(cfg.eval.k),
            item_popularity=popularity,
            metrics=names,
        )
        metrics.update(found)
    if cfg.als.weighting == "explicit":
        clip = None if cfg.eval.rating_clip is None else tuple(cfg.eval.rating_clip)
        found = rating_metrics(
            user_vectors, model.item_embeddings(), truth[users], user_offsets=offsets, clip=clip
        )
        metrics.update(found)
    return {k: (v if isinstance(v, int) else float(v)) for k, v in metrics.items()}


# ------------------------------------------------------------------------------ environment
def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results (no Hydra import needed)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("recsys", "torch", "numpy", "scipy", "faiss-cpu", "faiss-gpu", "hydra-core",
                 "omegaconf", "tensorboard"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    with contextlib.suppress(Exception):
        import faiss

        versions["faiss"] = faiss.__version__
    return versions


def git_commit(folder: Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the repository holding the code, when available."""
    folder = folder or repo_root()
    try:
        sha = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())} if sha else None


def device_info(model: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"als": str(model.device), "cuda_available": torch.cuda.is_available()}
    if model.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(model.device)
    info["cpu_threads"] = torch.get_num_threads()
    return info


# ------------------------------------------------------------------------------ resume
def _override_keys(overrides: Sequence[str]) -> list[str]:
    keys = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("~+")
        keys.append(key.split("@", 1)[0])
    return keys


def _check_resume_config(
    saved: dict[str, Any], current: dict[str, Any], overrides: Sequence[str] | None
) -> list[str]:
    """Keys where the current command asks for something else than the checkpoint's config."""
    diff = differing_keys(saved, current, ignore=RESUME_MUTABLE)
    if overrides is None:
        return diff
    typed = [k for k in _override_keys(overrides) if not k.startswith("hydra")]

    def covered(d: str) -> bool:
        return any(k == "experiment" or d == k or d.startswith(k + ".") for k in typed)

    return [d for d in diff if covered(d)]


# ------------------------------------------------------------------------------ run
@dataclass
class RunResult:
    """What a finished run produced."""

    output_dir: Path
    objective_name: str
    objective: float
    metrics: dict[str, float]
    artifacts: dict[str, Path]
    resumed_from: int | None = None
    skipped: bool = False
    #: False on the ranks > 0 of a distributed run (they write nothing; `metrics` is empty)
    primary: bool = True


#: ``als.*`` keys that configure `ALS.sample_posterior`, not the constructor
POSTERIOR_KEYS = ("posterior_samples", "posterior_burn_in", "posterior_prior")


def _als_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """`ALS` arguments from ``cfg.als`` (how to run it, ``als.distributed*``, is not among them);
    in a distributed run on CUDA each rank uses its own GPU (``cuda:LOCAL_RANK``)."""
    kwargs = dataclasses.asdict(cfg.als)
    for key in ("distributed", "distributed_timeout_s", *POSTERIOR_KEYS):
        kwargs.pop(key)
    if cfg.als.distributed and torch.distributed.is_initialized():
        from recsys.als.distributed import local_device
        from recsys.als.model import resolve_device

        kwargs["device"] = str(local_device(resolve_device(kwargs["device"])))
    return kwargs


def _join_ranks(conf: TrainConfig) -> Any | None:
    """The communicator of a distributed run (joining the job's process group), else None."""
    from recsys.als import distributed

    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed.launched_with_torchrun() else 1
    if not conf.als.distributed:
        if world > 1:
            raise ConfigError(
                f"als.distributed=false but this process is one of WORLD_SIZE={world} ranks "
                "(torchrun): each would train the whole model and write the same files; add "
                "als.distributed=true (or launch one process)"
            )
        return None
    if not distributed.launched_with_torchrun() and not torch.distributed.is_initialized():
        logger.warning(
            "als.distributed=true but this process was not started by torchrun (RANK and "
            "WORLD_SIZE are not set): training in one process"
        )
        return None
    from recsys.als.model import resolve_device

    return distributed.init_process_group(
        timeout_s=conf.als.distributed_timeout_s, device=resolve_device(conf.als.device)
    )


def _distributed_report(comm: Any, matrix: sp.csr_matrix, timeout_s: float) -> dict[str, Any]:
    """How the fit was sharded and each rank's peak memory (a collective: every rank calls it)."""
    from recsys.als.distributed import shard_plan
    from recsys.memory import peak_rss_mb

    users, items = shard_plan(matrix, comm.world_size)
    user_nnz = [int(matrix.indptr[hi] - matrix.indptr[lo]) for lo, hi in users.ranges()]
    item_degrees = np.bincount(matrix.indices, minlength=matrix.shape[1])
    item_nnz = [int(item_degrees[lo:hi].sum()) for lo, hi in items.ranges()]
    rss = comm.all_gather_values([peak_rss_mb()], "gathering the ranks' peak memory")
    return {
        "world_size": comm.world_size,
        "backend": comm.backend,
        "timeout_s": timeout_s,
        "user_bounds": list(users.bounds),
        "item_bounds": list(items.bounds),
        "user_interactions_per_rank": user_nnz,
        "item_interactions_per_rank": item_nnz,
        "peak_rss_mb_per_rank": [round(float(v), 1) for v in rss[:, 0]],
    }


def _snapshot(model: Any) -> Any:
    """A detached copy of a model (factors, biases, history) to keep the best epoch."""
    import copy

    clone = copy.copy(model)
    for name in model.TENSORS:
        value = getattr(model, name)
        setattr(clone, name, None if value is None else value.detach().clone())
    clone.history = [dict(h) for h in model.history]
    return clone


def _restore(model: Any, best: Any) -> None:
    for name in model.TENSORS:
        setattr(model, name, getattr(best, name))
    model.global_bias = best.global_bias
    model.history = [dict(h) for h in best.history]


def _hparams(cfg: TrainConfig) -> dict[str, Any]:
    flat = flatten(to_dict(cfg))
    keep = ("als.", "index.type", "index.metric", "split.method", "split.validation",
            "eval.objective", "data.source", "data.preset", "seed")  # fmt: skip
    drop = ("als.device", "als.memory_budget_mb", "als.seed", "als.distributed",
            "als.distributed_timeout_s")  # fmt: skip
    return {
        k: v
        for k, v in flat.items()
        if any(k == p or k.startswith(p) for p in keep) and k not in drop
    }


def run(
    cfg: Any,
    output_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] | None = None,
    epoch_hook: EpochHook | None = None,
) -> RunResult:
    """Train, evaluate and export as `cfg` says, writing every artifact into `output_dir`.

    Args:
        cfg: a composed config (DictConfig or dict) or a :class:`TrainConfig`.
        output_dir: the run folder (Hydra's ``runtime.output_dir``).
        overrides: the command-line overrides (Hydra's ``overrides.task``); on resume only the
            keys typed there must agree with the checkpoint (None: the whole config must).
        epoch_hook: called after each epoch's bookkeeping (and checkpoint) with
            ``(epoch, loss, seconds, model)``; an exception it raises aborts the run.

    Returns:
        :class:`RunResult`; ``objective`` is the test value of ``cfg.eval.objective``.

    Raises:
        ConfigError: an invalid config or a resume that conflicts with the checkpoint.
        recsys.data.DataError: unusable input data.
    """
    conf = validate(cfg)
    comm = _join_ranks(conf)
    primary = comm is None or comm.rank == 0
    if comm is not None:  # rank 0's folder: the others read its checkpoints when resuming
        output_dir = comm.broadcast_text(str(output_dir), "broadcast of the run folder")
    out = Path(output_dir)
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
    resume = bool(conf.resume or conf.run_dir)
    checkpointer = Checkpointer(out / CHECKPOINT_DIR)

    if resume and (out / METRICS_FILE).is_file() and checkpointer.latest() is None:
        metrics = json.loads((out / METRICS_FILE).read_text())
        if primary:
            logger.info("run in %s is already complete; nothing to resume", out)
        return RunResult(
            out, conf.eval.objective, float(metrics[conf.eval.objective]), metrics,
            _artifacts(out), skipped=True, primary=primary,
        )  # fmt: skip

    loaded = checkpointer.load(device=_als_kwargs(conf)["device"]) if resume else None
    if resume and loaded is None and primary:
        logger.warning("resume: no checkpoint in %s; starting from scratch", out)
    if loaded is not None:
        saved_cfg = loaded[2]["config"]
        conflicts = _check_resume_config(saved_cfg, to_dict(conf), overrides)
        if conflicts:
            was, now = flatten(saved_cfg), flatten(to_dict(conf))
            shown = ", ".join(
                f"{k} (checkpoint {was.get(k)!r}, now {now.get(k)!r})" for k in conflicts[:5]
            )
            raise ConfigError(
                f"cannot resume {out}: the command asks for other settings than its checkpoint: "
                f"{shown}; drop those overrides (a resumed run keeps its config) or start a new run"
            )
        mutable = {k: v for k, v in flatten(to_dict(conf)).items()
                   if any(k == m or k.startswith(m + ".") for m in RESUME_MUTABLE)}  # fmt: skip
        merged = {**flatten(saved_cfg), **mutable}
        conf = validate(_unflatten(merged))
    elif primary:
        checkpointer.clear()
        for name in (METRICS_FILE, METADATA_FILE):
            (out / name).unlink(missing_ok=True)
    return _train(conf, out, checkpointer, loaded, overrides, epoch_hook, comm)


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temp files a killed run left next to its artifacts (``.<artifact>.<random>``)."""
    names = (MODEL_FILE, TRAIN_FILE, INDEX_FILE, INDEX_FILE + ".json", METRICS_FILE, METADATA_FILE)
    for path in out.glob(".*"):
        if path.is_file() and any(path.name.startswith(f".{n}.") for n in names):
            path.unlink(missing_ok=True)


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _artifacts(out: Path) -> dict[str, Path]:
    return {
        "model": out / MODEL_FILE,
        "train": out / TRAIN_FILE,
        "index": out / INDEX_FILE,
        "index_sidecar": out / (INDEX_FILE + ".json"),
        "metrics": out / METRICS_FILE,
        "metadata": out / METADATA_FILE,
        "tensorboard": out / TB_DIR,
    }


def _train(
    conf: TrainConfig,
    out: Path,
    checkpointer: Checkpointer,
    loaded: tuple[Any, Any | None, dict[str, Any]] | None,
    overrides: Sequence[str] | None,
    epoch_hook: EpochHook | None,
    comm: Any | None = None,
) -> RunResult:
    from tqdm.auto import tqdm

    from recsys.als import ALS

    primary = comm is None or comm.rank == 0
    info = logger.info if primary else (lambda *args: None)  # the other ranks stay quiet
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    data = prepare_data(conf)
    load_seconds = time.perf_counter() - t0
    info(
        "data: %s; train %d, test %d, validation %s interactions",
        data.full_stats, data.train.nnz, data.test.nnz,
        None if data.validation is None else data.validation.nnz,
    )  # fmt: skip

    stopper = EarlyStopping(conf.eval.patience, minimize=conf.eval.minimize)
    original_overrides = list(overrides or [])
    best: dict[str, Any] = {"model": None}  # factors of the best evaluated epoch so far
    resumed_from: int | None = None
    elapsed_before = 0.0
    if loaded is not None:
        model, best["model"], state = loaded
        stopper.restore(state["early_stopping"])
        resumed_from = len(model.history)
        elapsed_before = float(state.get("train_seconds", 0.0))
        original_overrides = list(state.get("overrides") or [])
        if best["model"] is None and stopper.best_epoch == resumed_from:
            best["model"] = _snapshot(model)  # the checkpoint's own factors are the best
        info("resuming %s from epoch %d", out, resumed_from)
    else:
        model = ALS(**_als_kwargs(conf))

    tracking = conf.tracking
    tracker = Tracker(
        out / TB_DIR,
        enabled=tracking.enabled and primary,
        histograms=tracking.histograms,
        projector=tracking.projector,
        projector_max_items=tracking.projector_max_items,
        hparams=tracking.hparams,
        purge_step=None if resumed_from is None else resumed_from + 1,
    )
    validating = data.validation is not None
    objective = conf.eval.objective
    try:
        bar = tqdm(
            total=conf.als.iterations,
            initial=resumed_from or 0,
            desc="ALS",
            unit="epoch",
            disable=not (conf.progress and primary),
            dynamic_ncols=True,
        )
        fit_start = time.perf_counter()

        def on_epoch(epoch: int, loss: float, seconds: float, m: Any) -> bool:
            if not primary:  # rank 0 evaluates, checkpoints and decides when to stop
                if epoch_hook is not None:
                    epoch_hook(epoch, loss, seconds, m)
                return False
            tracker.log_epoch(m.history[-1], epoch)
            tracker.log_factors(epoch, m.user_factors, m.item_factors, m.user_bias, m.item_bias)
            postfix: dict[str, Any] = {"s": f"{seconds:.2f}"}
            if math.isfinite(loss):
                postfix["loss"] = f"{loss:.4g}"
            stop = False
            if validating and epoch % conf.eval.every == 0:
                metrics = evaluate_model(
                    m, conf, data.fit.matrix, data.validation.matrix,
                    max_users=conf.eval.max_users, seed=conf.seed, objective_only=True,
                )  # fmt: skip
                tracker.log_metrics(metrics, epoch, "validation")
                value = metrics.get(objective, float("nan"))
                if stopper.update(epoch, value, metrics):
                    best["model"] = _snapshot(m)
                postfix[f"val {objective}"] = f"{value:.4f}"
                stop = stopper.should_stop
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            every = conf.checkpoint.every
            if every and epoch % every == 0 and not stop and epoch < conf.als.iterations:
                keep_best = best["model"] is not None and stopper.best_epoch != epoch
                checkpointer.save(
                    epoch,
                    m,
                    best["model"] if keep_best else None,
                    {
                        "epoch": epoch,
                        "early_stopping": stopper.state(),
                        "train_seconds": elapsed_before + time.perf_counter() - fit_start,
                        "config": to_dict(conf),
                        "overrides": original_overrides,
                    },
                )
            if epoch_hook is not None:
                epoch_hook(epoch, loss, seconds, m)
            return stop

        distributed = comm if comm is not None else False
        model.fit(data.fit, callback=on_epoch, resume=loaded is not None, distributed=distributed)
        bar.close()
        history = [dict(h) for h in model.history]
        epochs_run = len(history)
        if best["model"] is not None and stopper.best_epoch is not None:
            if stopper.best_epoch != epochs_run:
                _restore(model, best["model"])
            model.history = history[: stopper.best_epoch]

        refit_history: list[dict[str, Any]] | None = None
        refit_epochs = stopper.best_epoch
        if conf.eval.refit and comm is not None:  # only rank 0 evaluated
            best_epoch = comm.broadcast_float(float(refit_epochs or 0), "broadcast of best epoch")
            refit_epochs = int(best_epoch) or None
        if conf.eval.refit and refit_epochs is not None:
            info("refit on the whole training split for %d epochs", refit_epochs)
            model = ALS(**{**_als_kwargs(conf), "iterations": refit_epochs})

            def on_refit(epoch: int, loss: float, seconds: float, m: Any) -> None:
                tracker.log_metrics({"loss": loss, "epoch_seconds": seconds}, epoch, "refit")

            model.fit(data.train, callback=on_refit, distributed=distributed)
            refit_history = [dict(h) for h in model.history]
        posterior_history: list[dict[str, Any]] | None = None
        if conf.als.posterior_samples:  # single process (checked by the config)
            info(
                "posterior sampling: %d burn-in sweeps, then %d draws averaged",
                conf.als.posterior_burn_in, conf.als.posterior_samples,
            )  # fmt: skip
            model.sample_posterior(
                data.train if refit_history is not None else data.fit,
                conf.als.posterior_samples,
                burn_in=conf.als.posterior_burn_in,
                prior=conf.als.posterior_prior,
            )
            posterior_history = [h for h in model.history if h.get("phase") == "posterior"]
            for sweep, h in enumerate(posterior_history, start=1):
                tracker.log_metrics(
                    {"loss": h["loss"], "noise_precision": h["noise_precision"]}, sweep, "posterior"
                )
        train_seconds = elapsed_before + time.perf_counter() - fit_start
        sharding = (
            None
            if comm is None
            else _distributed_report(comm, data.fit.matrix, conf.als.distributed_timeout_s)
        )
        if not primary:  # rank 0 evaluates and writes everything; wait for its objective
            value = comm.broadcast_float(math.nan, "waiting for rank 0's evaluation and artifacts")
            return RunResult(
                out, objective, value, {}, _artifacts(out), resumed_from=resumed_from,
                primary=False,
            )  # fmt: skip

        # ---------------------------------------------------------------- test evaluation
        t_eval = time.perf_counter()
        test_metrics = evaluate_model(
            model,
            conf,
            data.train.matrix,
            data.test.matrix,
            fold_in=None if data.fold_in is None else data.fold_in.matrix,
        )
        eval_seconds = time.perf_counter() - t_eval
        final_epoch = len(model.history)
        tracker.log_metrics(test_metrics, final_epoch, "test")
        if objective not in test_metrics:
            raise ConfigError(
                f"eval.objective={objective}: the evaluation produced no such metric; it has "
                f"{', '.join(sorted(test_metrics))}"
            )

        # ---------------------------------------------------------------- artifacts
        artifacts = _artifacts(out)
        model.save(artifacts["model"])  # ALS.save writes atomically
        if conf.save_train:
            data.train.save(artifacts["train"])  # atomic too: seen items, ids, titles
        else:
            del artifacts["train"]
        t_index = time.perf_counter()
        index_info = export_index(model, conf, artifacts["index"], model_path=artifacts["model"])
        index_seconds = time.perf_counter() - t_index

        metrics: dict[str, float] = dict(test_metrics)
        metrics["train_seconds"] = round(train_seconds, 4)
        # the ALS epochs alone (no validation, checkpoints or data loading), refit and posterior
        # sweeps included
        epoch_seconds = sum(
            h.get("seconds", 0.0)
            for h in history + (refit_history or []) + (posterior_history or [])
        )
        metrics["fit_seconds"] = round(epoch_seconds, 4)
        metrics["epochs"] = epochs_run
        if stopper.best_epoch is not None:
            metrics["best_epoch"] = stopper.best_epoch
            metrics[f"validation_{objective}"] = float(stopper.best_value)

        if tracking.projector:
            popularity = np.bincount(data.train.matrix.indices, minlength=data.train.n_items)
            tracker.log_projector(
                model.item_embeddings(),
                item_ids=data.train.item_ids,
                titles=data.train.item_titles,
                popularity=popularity,
                step=final_epoch,
            )
        tracker.log_hparams(_hparams(conf), metrics)

        metadata = {
            "config": to_dict(conf),
            "overrides": original_overrides,
            "resume_overrides": None if resumed_from is None else list(overrides or []),
            "objective": {
                "name": objective,
                "value": metrics[objective],
                "minimize": conf.eval.minimize,
            },
            "data": {
                "full": data.full_stats,
                "train": data.train.stats(),
                "test": data.test.stats(),
                "fit": data.fit.stats(),
                "validation": None if data.validation is None else data.validation.stats(),
                "fold_in": None if data.fold_in is None else data.fold_in.stats(),
                "split_report": data.report,
            },
            "history": history,
            "refit_history": refit_history,
            "posterior_history": posterior_history,
            "evaluations": stopper.evaluations,
            "best_epoch": stopper.best_epoch,
            "epochs": epochs_run,
            "resumed_from_epoch": resumed_from,
            "timings": {
                "load_seconds": round(load_seconds, 4),
                "train_seconds": round(train_seconds, 4),
                "test_eval_seconds": round(eval_seconds, 4),
                "index_seconds": round(index_seconds, 4),
            },
            "index": index_info,
            "versions": library_versions(),
            "device": device_info(model),
            "distributed": sharding,
            "git": git_commit(),
            "command": sys.argv,
            "started": started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "artifacts": {k: v.name for k, v in artifacts.items()},
        }
        atomic_write_json(artifacts["metadata"], metadata)
        atomic_write_json(artifacts["metrics"], metrics)  # last: its presence marks completion
        checkpointer.clear()
        if comm is not None:
            comm.broadcast_float(float(metrics[objective]), "broadcast of the test objective")
    finally:
        tracker.close()
    return RunResult(
        out, objective, float(metrics[objective]), metrics, artifacts, resumed_from=resumed_from
    )


def export_index(
    model: Any, conf: TrainConfig, path: Path, *, model_path: Path | None = None
) -> dict[str, Any]:
    """Build the configured Faiss index over the model's item embeddings and save it atomically.

    Returns a short description for metadata.json.
    """
    from recsys.index import build_index_from_model, save_index

    ix = conf.index
    index = build_index_from_model(
        model,
        ix.type,
        ix.metric,
        nlist=ix.nlist,
        nprobe=ix.nprobe,
        hnsw_m=ix.M,
        ef_construction=ix.ef_construction,
        ef_search=ix.ef_search,
        factory=ix.factory,
        mips_to_l2=ix.mips_to_l2,
        device="gpu" if ix.gpu else "cpu",
        item_ids=model.item_ids,
        seed=conf.seed,
        shards=ix.shards,
    )
    sidecar = save_index(index, path, model_path=model_path)
    return {
        "file": path.name,
        "sidecar": sidecar.name,
        "type": ix.type,
        "metric": ix.metric,
        "shards": index.shards,
        "description": repr(index),
    }


def objective_is_rating(name: str) -> bool:
    return name in RATING_METRICS


# ------------------------------------------------------------------------------ saved runs
@dataclass
class SavedRun:
    """A finished run folder, loaded for serving (``scripts/recommend.py``, ``export_index.py``)."""

    folder: Path
    metadata: dict[str, Any]
    model: Any
    train: Any | None  # Interactions from train.npz (None when the run did not keep it)

    @property
    def config(self) -> TrainConfig:
        return validate(self.metadata["config"])


def load_run(run_dir: str | os.PathLike[str], *, device: str = "cpu") -> SavedRun:
    """Read ``metadata.json``, ``model.npz`` and ``train.npz`` of a completed run folder."""
    from recsys.als import ALS
    from recsys.data.interactions import Interactions

    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file() or not (folder / METRICS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} holds no completed run (no {METADATA_FILE} / {METRICS_FILE}); pass the "
            "folder scripts/train.py printed, e.g. outputs/<date>/<time>"
        )
    metadata = json.loads(meta_path.read_text())
    model = ALS.load(folder / MODEL_FILE, device=device)
    train = Interactions.load(folder / TRAIN_FILE) if (folder / TRAIN_FILE).is_file() else None
    return SavedRun(folder, metadata, model, train)


def parse_key_values(argv: Sequence[str], allowed: Sequence[str]) -> dict[str, list[str]]:
    """``["run_dir=x", "user=1", "user=2,3"]`` -> ``{"run_dir": ["x"], "user": ["1", "2", "3"]}``.

    Values may be comma lists or ``[a,b]``; a key not in `allowed` raises ValueError naming the
    allowed keys (one line).
    """
    out: dict[str, list[str]] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise ValueError(f"{arg}: expected key=value with key one of {', '.join(allowed)}")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        parts = [v.strip().strip("'\"") for v in value.split(",")] if key != "item" else [value]
        out.setdefault(key, []).extend(p for p in parts if p != "")
    return out
