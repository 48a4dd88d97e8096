"""What a run records about itself: ``metrics.json``, ``metadata.json`` and the TensorBoard hparams.

``metrics.json`` is flat (``{"recall@20": ..., "train_seconds": ...}``); a tuning trial's
(``eval.test=false``) metrics are its final model's on the validation split, each named
``validation_<metric>`` (no key without the prefix then: the split is in every name).
``metadata.json`` holds the resolved config, data statistics, versions, device, git commit, loss
history and evaluations, and the objective with the split it was measured on.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from recsys.config import TrainConfig, flatten, repo_root, to_dict
from recsys.pipeline.data import Prepared
from recsys.pipeline.fit import Fitted, Start
from recsys.pipeline.job import Job

__all__ = [
    "device_info",
    "git_commit",
    "hparams",
    "library_versions",
    "metadata_record",
    "metrics_record",
    "objective_key",
    "utc_now",
]


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``started`` / ``finished``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    """Where the model trained: its device, the GPU's name, the CPU threads torch used."""
    info: dict[str, Any] = {"als": str(model.device), "cuda_available": torch.cuda.is_available()}
    if model.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(model.device)
    info["cpu_threads"] = torch.get_num_threads()
    return info


def hparams(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys the TensorBoard hparams session compares runs on."""
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


def objective_key(objective: str, split: str) -> str:
    """The metrics.json key of `objective` measured on `split` (``test`` or ``validation``)."""
    return objective if split == "test" else f"{split}_{objective}"


def metrics_record(
    final: Mapping[str, float], fitted: Fitted, start: Start, objective: str, split: str
) -> dict[str, float]:
    """``metrics.json``: the final model's metrics on `split` (named by :func:`objective_key`),
    the seconds, the epochs and the best validation (of early stopping, unless the final
    evaluation was on validation: that one is the final model's)."""
    metrics: dict[str, float] = {objective_key(k, split): v for k, v in final.items()}
    metrics["train_seconds"] = round(fitted.train_seconds, 4)
    metrics["fit_seconds"] = round(fitted.epoch_seconds, 4)
    metrics["epochs"] = len(fitted.history)
    stopper = start.stopper
    if stopper.best_epoch is not None:
        metrics["best_epoch"] = stopper.best_epoch
        metrics.setdefault(f"validation_{objective}", float(stopper.best_value))
    return metrics


def metadata_record(
    job: Job,
    data: Prepared,
    start: Start,
    fitted: Fitted,
    *,
    metrics: Mapping[str, float],
    overrides: Sequence[str] | None,
    timings: Mapping[str, float],
    index_info: dict[str, Any] | None,
    sharding: dict[str, Any] | None,
    started: str,
    artifacts: Mapping[str, Path],
) -> dict[str, Any]:
    """``metadata.json``; `overrides` are this command's, `timings` the stages' seconds."""
    conf = job.conf
    objective = conf.eval.objective
    split = "test" if conf.eval.test else "validation"
    return {
        "config": to_dict(conf),
        "overrides": start.overrides,
        "resume_overrides": None if start.resumed_from is None else list(overrides or []),
        "protocol": job.protocol,
        "objective": {
            "name": objective,
            "split": split,
            "value": metrics[objective_key(objective, split)],
            "minimize": conf.eval.minimize,
        },
        "data": _data_stats(data),
        "history": fitted.history,
        "refit_history": fitted.refit_history,
        "posterior_history": fitted.posterior_history,
        "evaluations": start.stopper.evaluations,
        "best_epoch": start.stopper.best_epoch,
        "epochs": len(fitted.history),
        "stopped_early": start.stopper.fired(len(fitted.history), conf.als.iterations),
        "resumed_from_epoch": start.resumed_from,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "index": index_info,
        "versions": library_versions(),
        "device": device_info(fitted.model),
        "distributed": sharding,
        "git": git_commit(),
        "command": sys.argv,
        "started": started,
        "finished": utc_now(),
        "artifacts": {k: v.name for k, v in artifacts.items()},
    }


def _data_stats(data: Prepared) -> dict[str, Any]:
    return {
        "full": data.full_stats,
        "train": data.train.stats(),
        "test": data.test.stats(),
        "fit": data.fit.stats(),
        "validation": None if data.validation is None else data.validation.stats(),
        "fold_in": None if data.fold_in is None else data.fold_in.stats(),
        "split_report": data.report,
    }
