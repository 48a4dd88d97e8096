"""``run``: the stages in order, and the run folder's life from a fresh start or a resume to
``metrics.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config import ConfigError, validate
from recsys.pipeline.artifacts import (
    CHECKPOINT_DIR,
    METADATA_FILE,
    METRICS_FILE,
    TB_DIR,
    artifact_paths,
    atomic_write_json,
    lock_run_folder,
    read_json,
    remove_stale_temporaries,
)
from recsys.pipeline.callbacks import EpochHook
from recsys.pipeline.checkpoints import Checkpointer, check_same_settings, resumed_config
from recsys.pipeline.data import Prepared, prepare_data
from recsys.pipeline.evaluate import evaluate_model, require_objective
from recsys.pipeline.export import EXPORTED, check_index, export_model
from recsys.pipeline.fit import Fitted, Start, als_kwargs, check_device, fit, start_from
from recsys.pipeline.job import Job, logger
from recsys.pipeline.metadata import (
    hparams,
    metadata_record,
    metrics_record,
    objective_key,
    utc_now,
)
from recsys.pipeline.ranks import distributed_report, join_ranks
from recsys.pipeline.report import write_report
from recsys.pipeline.tracking import Tracker

__all__ = ["RunResult", "run"]


@dataclass
class RunResult:
    """What a finished run produced: `objective` is `objective_name` (``eval.objective``)
    measured on `objective_split`, ``test``, or ``validation`` for a tuning trial
    (``eval.test=false``)."""

    output_dir: Path
    objective_name: str
    objective: float
    metrics: dict[str, float]
    artifacts: dict[str, Path]
    resumed_from: int | None = None
    skipped: bool = False
    #: False on the ranks > 0 of a distributed run (they write nothing; `metrics` is empty)
    primary: bool = True
    objective_split: str = "test"


def run(
    cfg: Any,
    output_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] | None = None,
    epoch_hook: EpochHook | None = None,
    protocol: dict[str, Any] | None = None,
) -> RunResult:
    """Train, evaluate and export as `cfg` says, writing every artifact into `output_dir`.

    Args:
        cfg: a composed config (DictConfig or dict) or a :class:`TrainConfig`.
        output_dir: the run folder (Hydra's ``runtime.output_dir``).
        overrides: the command-line overrides (Hydra's ``overrides.task``); on resume only the
            keys typed there must agree with the checkpoint (None: the whole config must).
        epoch_hook: called after each epoch's bookkeeping (and checkpoint) with
            ``(epoch, loss, seconds, model)``; an exception it raises aborts the run.
        protocol: how a tuning study chose these settings (``metadata.json["protocol"]``;
            :func:`recsys.tuning.refit` passes it).

    Returns:
        :class:`RunResult`; ``objective`` is the test value of ``cfg.eval.objective`` (its
        validation value with ``eval.test=false``).

    Raises:
        ConfigError: an invalid config or a resume that conflicts with the checkpoint.
        recsys.data.DataError: unusable input data.
    """
    conf = validate(cfg)
    check_device(conf)
    job = Job(conf, Path(output_dir), join_ranks(conf), protocol)
    if job.comm is not None:  # the run folder is rank 0's (the others read its checkpoints)
        out = job.comm.broadcast_text(str(job.out), "broadcast of the run folder")
        job = dataclasses.replace(job, out=Path(out))
    with lock_run_folder(job.out) if job.primary else contextlib.nullcontext():
        return _run_locked(job, overrides, epoch_hook)


def _run_locked(
    job: Job, overrides: Sequence[str] | None, epoch_hook: EpochHook | None
) -> RunResult:
    """:func:`run` once the primary holds the run folder's lock (and cleared a killed run's
    temporary files): a completed run is answered from its files, an unfinished one resumed;
    a fresh run into a folder holding either is refused (ConfigError), never trained over."""
    conf, out = job.conf, job.out
    if job.primary:
        remove_stale_temporaries(out)
    resume = bool(conf.resume or conf.run_dir)
    checkpointer = Checkpointer(out / CHECKPOINT_DIR, required=("config", "early_stopping"))
    if (out / METRICS_FILE).is_file():
        return _completed(job, checkpointer, overrides, resume)
    if not resume and checkpointer.folders():
        raise ConfigError(
            f"{out} holds an unfinished run ({CHECKPOINT_DIR}/); continue it with run_dir={out}, "
            "or train into a new folder (another hydra.run.dir)"
        )
    loaded = checkpointer.load(device=als_kwargs(conf)["device"]) if resume else None
    if resume and loaded is None and job.primary:
        logger.warning("resume: no checkpoint in %s; starting from scratch", out)
    if loaded is not None:
        job = dataclasses.replace(
            job, conf=resumed_config(conf, loaded[2]["config"], overrides, out)
        )
    elif job.primary:
        checkpointer.clear()
    return _train(job, checkpointer, loaded, overrides, epoch_hook)


def _completed(
    job: Job, checkpointer: Checkpointer, overrides: Sequence[str] | None, resume: bool
) -> RunResult:
    """The result of a run folder that is already complete: with ``resume`` / ``run_dir`` and
    a command asking for nothing else than the run did (ConfigError otherwise, as a fresh run
    into it is: a complete run is never overwritten)."""
    out = job.out
    if not resume:
        raise ConfigError(
            f"{out} already holds a completed run ({METRICS_FILE}); train into a new folder "
            f"(another hydra.run.dir) or pass run_dir={out} to read its result"
        )
    meta = read_json(out / METADATA_FILE)
    check_same_settings(job.conf, meta["config"], overrides, out)
    metrics = read_json(out / METRICS_FILE)
    if job.primary:
        checkpointer.clear()  # left by a run killed between metrics.json and its cleanup
        logger.info("run in %s is already complete; nothing to resume", out)
    objective, split = job.conf.eval.objective, meta["objective"].get("split", "test")
    return RunResult(
        out, objective, float(metrics[objective_key(objective, split)]), metrics,
        _artifacts(job.conf, out), skipped=True, primary=job.primary, objective_split=split,
    )  # fmt: skip


def _artifacts(conf: Any, out: Path) -> dict[str, Path]:
    """The run folder's artifact paths, without the exported ones when ``export=false``."""
    paths = artifact_paths(out)
    return paths if conf.export else {k: v for k, v in paths.items() if k not in EXPORTED}


def _open_tracker(job: Job, resumed_from: int | None) -> Tracker:
    """The job's TensorBoard writer under ``tb/`` (disabled on the ranks > 0)."""
    tracking = job.conf.tracking
    return Tracker(
        job.out / TB_DIR,
        enabled=tracking.enabled and job.primary,
        histograms=tracking.histograms,
        projector=tracking.projector,
        projector_max_items=tracking.projector_max_items,
        hparams=tracking.hparams,
        purge_step=None if resumed_from is None else resumed_from + 1,
    )


def _train(
    job: Job,
    checkpointer: Checkpointer,
    loaded: tuple[Any, Any | None, dict[str, Any]] | None,
    overrides: Sequence[str] | None,
    epoch_hook: EpochHook | None,
) -> RunResult:
    """Load and split, fit, then (rank 0) evaluate, export and record; the other ranks wait."""
    started = utc_now()
    t0 = time.perf_counter()
    data = prepare_data(job.conf)
    load_seconds = time.perf_counter() - t0
    if job.conf.export:  # before training: a bad index.* fails now
        check_index(job.conf, data.train.n_items)
    job.info(
        "data: %s; train %d, test %d, validation %s interactions",
        data.full_stats, data.train.nnz, data.test.nnz,
        None if data.validation is None else data.validation.nnz,
    )  # fmt: skip
    start = start_from(job, loaded, overrides)
    tracker = _open_tracker(job, start.resumed_from)
    try:
        fitted = fit(
            job, data, start, tracker=tracker, checkpointer=checkpointer, epoch_hook=epoch_hook
        )
        sharding = None
        if job.comm is not None:
            timeout_s = job.conf.als.distributed_timeout_s
            sharding = distributed_report(job.comm, data.fit.matrix, timeout_s)
        if not job.primary:  # rank 0 evaluates and writes everything; wait for its objective
            value = job.comm.broadcast_float(
                math.nan, "waiting for rank 0's evaluation and artifacts"
            )
            return RunResult(
                job.out, job.conf.eval.objective, value, {}, _artifacts(job.conf, job.out),
                resumed_from=start.resumed_from, primary=False, objective_split=_split(job.conf),
            )  # fmt: skip
        return _finish(
            job, data, start, fitted, tracker, checkpointer,
            overrides=overrides, sharding=sharding, started=started, load_seconds=load_seconds,
        )  # fmt: skip
    finally:
        tracker.close()


def _finish(
    job: Job,
    data: Prepared,
    start: Start,
    fitted: Fitted,
    tracker: Tracker,
    checkpointer: Checkpointer,
    *,
    overrides: Sequence[str] | None,
    sharding: dict[str, Any] | None,
    started: str,
    load_seconds: float,
) -> RunResult:
    """Rank 0: evaluate the final model (on the test split; on validation for a tuning trial),
    export, write the report (``eval.report``), then metadata.json and, last, metrics.json (its
    presence marks a complete run) and remove the checkpoints."""
    conf, model, objective, split = (
        job.conf,
        fitted.model,
        job.conf.eval.objective,
        _split(job.conf),
    )
    t_eval = time.perf_counter()
    final = _evaluate_final(conf, data, model)
    eval_seconds = time.perf_counter() - t_eval
    tracker.log_metrics(final, len(model.history), split)
    require_objective(final, objective)
    artifacts, index_info, index_seconds = export_model(model, conf, data, job.out)
    metrics = metrics_record(final, fitted, start, objective, split)
    _log_final(job, data, model, tracker, metrics)
    timings = {"load_seconds": load_seconds, "train_seconds": fitted.train_seconds,
               f"{split}_eval_seconds": eval_seconds, "index_seconds": index_seconds}  # fmt: skip
    metadata = metadata_record(
        job, data, start, fitted, metrics=metrics, overrides=overrides, timings=timings,
        index_info=index_info, sharding=sharding, started=started, artifacts=artifacts,
    )  # fmt: skip
    if conf.eval.report:
        written = write_report(job.out, metrics, metadata, model, data.train.matrix)
        metadata["artifacts"].update({name: path.name for name, path in written.items()})
        artifacts.update(written)
    atomic_write_json(artifacts["metadata"], metadata)
    atomic_write_json(artifacts["metrics"], metrics)  # last: its presence marks completion
    checkpointer.clear()
    value = float(metrics[objective_key(objective, split)])
    if job.comm is not None:
        job.comm.broadcast_float(value, f"broadcast of the {split} objective")
    return RunResult(
        job.out, objective, value, metrics, artifacts,
        resumed_from=start.resumed_from, objective_split=split,
    )  # fmt: skip


def _split(conf: Any) -> str:
    """The split the run's final metrics and objective come from."""
    return "test" if conf.eval.test else "validation"


def _evaluate_final(conf: Any, data: Prepared, model: Any) -> dict[str, float]:
    """The final model's metrics: on the test split, the training split's items excluded; with
    ``eval.test=false`` on the validation split instead, ``data.fit``'s items excluded (the
    test split is then never evaluated)."""
    if not conf.eval.test:
        return evaluate_model(model, conf, data.fit.matrix, data.validation.matrix)
    fold_in = None if data.fold_in is None else data.fold_in.matrix
    return evaluate_model(model, conf, data.train.matrix, data.test.matrix, fold_in=fold_in)


def _log_final(
    job: Job, data: Prepared, model: Any, tracker: Tracker, metrics: dict[str, float]
) -> None:
    """TensorBoard at the end: the projector's item embeddings and the hparams session."""
    if job.conf.tracking.projector:
        popularity = np.bincount(data.train.matrix.indices, minlength=data.train.n_items)
        tracker.log_projector(
            model.item_embeddings(),
            item_ids=data.train.item_ids,
            titles=data.train.item_titles,
            popularity=popularity,
            step=len(model.history),
        )
    tracker.log_hparams(hparams(job.conf), metrics)
