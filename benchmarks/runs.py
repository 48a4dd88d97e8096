"""One benchmark run: our ALS, `implicit`'s or LensKit's fitted and scored on a prepared dataset.

:func:`run_spec` fits, records per-epoch seconds and peak memory, and scores Recall@20 / NDCG@20
with the same :mod:`recsys.eval` code for every library; ``scripts/benchmark.py`` is the command
that runs many of them (each in its own process, see :mod:`benchmarks.isolation`).

Fairness rules the runs follow (they are also written into every result):

* Same data, factors, iterations and thread count: ``torch.set_num_threads(T)`` for ours,
  ``num_threads=T`` for implicit, whose OpenBLAS pool is limited to one thread during ``fit`` as
  implicit itself recommends (its solver parallelises with OpenMP).
* Same objective for the like-for-like timing (``ours-hkv``): Hu-Koren-Volinsky with confidence
  ``c = 1 + alpha * r``, constant regularization, no biases. implicit (>= 0.5) uses the value it is
  given as the confidence times its ``alpha``, so it receives the matrix ``1 + alpha * r`` with its
  own ``alpha = 1``: both then minimise the same loss. ``ours-ials`` (Rendle et al.'s iALS) is our
  quality model and has a different objective.
* LensKit's ``ImplicitMFScorer`` (``lenskit-hkv``, an exact per-row Cholesky solver in Rust,
  implicit's CG being the approximate peer) minimises the same HKV loss: it is given the
  interaction values as ratings with ``use_ratings=True`` and ``weight = alpha``, so its
  confidence is ``1 + weight * r``, and ``regularization = lambda`` for users and items alike
  (constant, not scaled by counts), no biases. Its Rayon pool gets ``T`` threads and its BLAS
  (the Gram matrix of each half-epoch) one, LensKit's own split when ``T`` is every core of a
  machine with at most 8 (the Gram matrix runs before the parallel solves, not beside them). Its
  initial factors differ from ours (squares of N(0, 0.01^2) draws).
* Seconds per epoch are the median of the per-epoch solve times: ``model.history[i]["seconds"]``
  for ours (our exact loss is computed after that timer stops, and counted in the fit total) and
  the time implicit's fit callback reports (both half-epochs, no loss) for implicit; for LensKit
  the time of its trainer's ``train_epoch`` (both half-epochs and the item Gram matrix it keeps
  for new users; building its training matrices is counted in the fit total). On CUDA the
  device is synchronised before each reading. The total fit time is the wall clock of ``fit``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.datasets import load_prepared
from recsys.memory import current_rss_mb, peak_rss_mb

#: model name -> (library, weighting or solver). ``ours-*`` use recsys.als.ALS, ``implicit-*``
#: implicit's AlternatingLeastSquares (CG with 3 steps, or its exact Cholesky path),
#: ``lenskit-hkv`` LensKit's ImplicitMFScorer (exact, Cholesky).
MODELS: dict[str, tuple[str, str]] = {
    "ours-hkv": ("ours", "hkv"),
    "ours-ials": ("ours", "ials"),
    "implicit-cg": ("implicit", "cg"),
    "implicit-cholesky": ("implicit", "cholesky"),
    "lenskit-hkv": ("lenskit", "hkv"),
}

#: the implicit model every ``ours-*`` run is compared against
REFERENCE_MODEL = "implicit-cg"

#: the exact peer every ``ours-*`` run is also compared against, when it ran
EXACT_PEER_MODEL = "lenskit-hkv"

#: optional library -> how to install it
_INSTALL = {
    "implicit": "pip install implicit",
    "lenskit": "pip install lenskit, Python >= 3.11, or the recsys[bench] extra",
}

METRIC_K = 20
RECALL = f"recall@{METRIC_K}"
NDCG = f"ndcg@{METRIC_K}"


# ------------------------------------------------------------------------------ one run
@dataclass
class RunSpec:
    """Everything one benchmark run needs (JSON-serialisable: it travels to a child process).

    ``target`` switches on time-to-quality: evaluate after every epoch and stop as soon as
    Recall@20 reaches it, or (with ``patience``) once that many evaluations in a row have not
    improved on the best Recall@20, as early stopping would. ``evaluate=False`` skips the final
    evaluation (scaling runs).
    """

    dataset: dict[str, Any]
    model: str
    factors: int
    iterations: int
    threads: int
    hyper: dict[str, float]
    device: str = "cpu"
    solver: str = "cholesky"
    cg_steps: int = 3
    dtype: str = "float32"
    memory_budget_mb: float = 1024.0
    seed: int = 0
    evaluate: bool = True
    target: float | None = None
    patience: int | None = None
    eval_device: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(MODELS)}")
        if self.factors < 1 or self.iterations < 1 or self.threads < 1:
            raise ValueError("factors, iterations and threads must all be >= 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 (or None), got {self.patience}")

    @property
    def library(self) -> str:
        return MODELS[self.model][0]


def missing_library(model: str) -> str | None:
    """Why ``model`` cannot run here (its library is not installed), or None when it can."""
    library = MODELS[model][0]
    if library not in _INSTALL or importlib.util.find_spec(library) is not None:
        return None
    return f"{model} skipped: {library} is not installed ({_INSTALL[library]})"


def evaluate_embeddings(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    *,
    user_offsets: np.ndarray | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Recall@20 and NDCG@20 over all items, each user's training items excluded.

    ``user_vectors`` has one row per user of ``train`` (or per user with test items, in the order
    of ``np.flatnonzero(test row lengths)``); only users with test items are scored. The metric code
    is :func:`recsys.eval.evaluate` for every library.
    """
    from recsys.eval import evaluate

    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if user_vectors.shape[0] == train.shape[0]:
        user_vectors = user_vectors[users]
        if user_offsets is not None:
            user_offsets = np.asarray(user_offsets)[users]
    elif user_vectors.shape[0] != users.size:
        raise ValueError(
            f"user_vectors has {user_vectors.shape[0]} rows; expected one per user "
            f"({train.shape[0]}) or per user with test items ({users.size})"
        )
    metrics = evaluate(
        np.ascontiguousarray(user_vectors, dtype=np.float32),
        np.ascontiguousarray(item_vectors, dtype=np.float32),
        train[users],
        test[users],
        ks=(METRIC_K,),
        user_offsets=user_offsets,
        metrics=("recall", "ndcg"),
        device=device,
    )
    return {RECALL: float(metrics[RECALL]), NDCG: float(metrics[NDCG])}


class _TargetReached(Exception):
    """Raised from implicit's fit callback to stop training (implicit ignores return values)."""


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _ours_model(spec: RunSpec) -> Any:
    from recsys.als import ALS

    weighting = MODELS[spec.model][1]
    h = spec.hyper
    common = {
        "iterations": spec.iterations,
        "use_bias": False,
        "solver": spec.solver,
        "cg_steps": spec.cg_steps,
        "device": spec.device,
        "dtype": spec.dtype,
        "seed": spec.seed,
        "memory_budget_mb": spec.memory_budget_mb,
    }
    if weighting == "hkv":
        return ALS(
            spec.factors,
            h["hkv_regularization"],
            weighting="hkv",
            alpha=h["hkv_alpha"],
            reg_exponent=0.0,
            **common,
        )
    return ALS(
        spec.factors,
        h["ials_regularization"],
        weighting="ials",
        alpha0=h["ials_alpha0"],
        reg_exponent=h["ials_reg_exponent"],
        **common,
    )


def _ours_vectors(model: Any, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return model.user_embeddings(users), model.item_embeddings(), model.user_offsets(users)


def _implicit_model(spec: RunSpec) -> Any:
    use_cg = MODELS[spec.model][1] == "cg"
    h = spec.hyper
    if spec.device.startswith("cuda"):
        if not use_cg:
            raise ValueError("implicit's GPU ALS has no exact (Cholesky) solver; use implicit-cg")
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            raise RuntimeError("implicit was built without CUDA: its GPU ALS is not available")
        from implicit.gpu.als import AlternatingLeastSquares as GpuALS

        model = GpuALS(
            factors=spec.factors,
            regularization=h["hkv_regularization"],
            alpha=1.0,
            iterations=spec.iterations,
            random_state=spec.seed,
        )
        model.cg_steps = spec.cg_steps
        return model
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=spec.factors,
        regularization=h["hkv_regularization"],
        alpha=1.0,
        use_cg=use_cg,
        iterations=spec.iterations,
        num_threads=spec.threads,
        random_state=spec.seed,
    )
    model.cg_steps = spec.cg_steps
    return model


def _implicit_vectors(model: Any, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    def host(m: Any) -> np.ndarray:
        return m.to_numpy() if hasattr(m, "to_numpy") else np.asarray(m)

    return host(model.user_factors)[users], host(model.item_factors), None


def _implicit_input(train: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """The confidence matrix 1 + alpha * r that makes implicit's loss equal to our hkv loss."""
    conf = train.copy()
    conf.data = (1.0 + alpha * conf.data).astype(np.float32)
    return conf


class _Progress:
    """The clock of one fit and its time-to-quality bookkeeping (curve, evaluation seconds).

    ``t0`` is when fit started; ``resumed`` when training last resumed (after fit started or an
    evaluation ended), so that implicit's synchronised epoch times exclude the evaluations.
    """

    def __init__(self, spec: RunSpec, score: Callable[[], dict[str, float]]) -> None:
        self.spec = spec
        self.score = score
        self.curve: list[dict[str, float]] = []
        self.eval_total = 0.0
        self.t0 = time.perf_counter()
        self.resumed = self.t0

    def after_epoch(self, epoch: int) -> bool:
        """Time-to-quality bookkeeping; True once the target is reached (or patience ran out)."""
        spec = self.spec
        if spec.target is None:
            return False
        e0 = time.perf_counter()
        metrics = self.score()
        _sync(spec.eval_device or spec.device)
        now = time.perf_counter()
        self.eval_total += now - e0
        self.curve.append({"epoch": epoch, "seconds": now - self.t0, **metrics})
        self.resumed = time.perf_counter()
        if metrics[RECALL] >= spec.target:
            return True
        curve = self.curve
        best = max(range(len(curve)), key=lambda j: curve[j][RECALL])
        return spec.patience is not None and len(curve) - 1 - best >= spec.patience


def _lenskit_threads(threads: int) -> None:
    """LensKit's thread pools: ``threads`` Rayon threads, one BLAS thread (set once a process)."""
    import torch

    os.environ["LK_NUM_THREADS"] = str(threads)
    os.environ["LK_NUM_BACKEND_THREADS"] = "1"
    from lenskit.parallel import get_parallel_config

    configured = get_parallel_config().threads  # initialises LensKit's pools on the first call
    torch.set_num_threads(threads)  # LensKit sets torch to its backend threads: ours again
    if configured != threads:
        raise RuntimeError(
            f"LensKit's pool already has {configured} threads in this process, not {threads}: "
            "run each benchmark in its own process (no --in-process)"
        )


def _lenskit_model(spec: RunSpec) -> Any:
    """ImplicitMFScorer with our HKV loss: confidence 1 + weight * r, constant lambda."""
    if spec.device != "cpu":
        raise ValueError("LensKit's ImplicitMFScorer trains on the CPU only; use --device cpu")
    from lenskit.als import ImplicitMFScorer

    _lenskit_threads(spec.threads)
    h = spec.hyper
    return ImplicitMFScorer(
        embedding_size=spec.factors,
        epochs=spec.iterations,
        regularization=h["hkv_regularization"],
        weight=h["hkv_alpha"],
        use_ratings=True,
    )


def _lenskit_input(train: sp.csr_matrix) -> Any:
    """``train`` as a LensKit Dataset whose user and item numbers are its row and column indices
    (the interaction values as ratings)."""
    import pandas as pd
    from lenskit.data import from_interactions_df

    coo = train.tocoo()
    frame = pd.DataFrame({"user_id": coo.row, "item_id": coo.col, "rating": coo.data})
    return from_interactions_df(
        frame,
        rating_col="rating",
        users=np.arange(train.shape[0]),
        items=np.arange(train.shape[1]),
    )


def _lenskit_vectors(model: Any, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    return model.user_embeddings[users], model.item_embeddings, None


def _setup(spec: RunSpec, train: sp.csr_matrix) -> tuple[Any, Any, Callable]:
    """(model, the data its fit receives, the function returning its vectors) of a run."""
    if spec.library == "ours":
        return _ours_model(spec), train, _ours_vectors
    if spec.library == "lenskit":
        return _lenskit_model(spec), _lenskit_input(train), _lenskit_vectors
    import implicit.cpu.als  # noqa: F401  (loads its BLAS, so that the limit below reaches it)
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        model = _implicit_model(spec)
    return model, _implicit_input(train, spec.hyper["hkv_alpha"]), _implicit_vectors


def _fit_ours(
    spec: RunSpec, model: Any, fit_input: sp.csr_matrix, progress: _Progress
) -> tuple[float, list[float]]:
    """Fit our model: (wall-clock fit seconds, per-epoch solve seconds from its history)."""

    def ours_callback(epoch: int, loss: float, seconds: float, m: Any) -> bool:
        return progress.after_epoch(epoch)

    model.fit(fit_input, callback=ours_callback)
    _sync(spec.device)
    fit_seconds = time.perf_counter() - progress.t0
    return fit_seconds, [float(h["seconds"]) for h in model.history]


def _fit_implicit(
    spec: RunSpec, model: Any, fit_input: sp.csr_matrix, progress: _Progress
) -> tuple[float, list[float]]:
    """Fit implicit's model: (wall-clock fit seconds, per-epoch seconds).

    implicit's own timer does not wait for the GPU: on CUDA the epochs are the synchronised
    times (the first also holds the transfers to the device; the median discounts it).
    """
    import threadpoolctl

    reported: list[float] = []  # implicit's own per-epoch timer
    synced: list[float] = []  # implicit on CUDA: synchronised epoch times, evaluations excluded

    def implicit_callback(iteration: int, elapsed: float, loss: Any) -> None:
        _sync(spec.device)
        synced.append(time.perf_counter() - progress.resumed)
        reported.append(float(elapsed))
        if progress.after_epoch(iteration + 1):
            raise _TargetReached

    blas_limit = threadpoolctl.threadpool_limits(limits=1, user_api="blas")
    with blas_limit, contextlib.suppress(_TargetReached):
        model.fit(fit_input, show_progress=False, callback=implicit_callback)
    _sync(spec.device)
    fit_seconds = time.perf_counter() - progress.t0
    return fit_seconds, synced if spec.device.startswith("cuda") else reported


def _fit_lenskit(
    spec: RunSpec, model: Any, fit_input: Any, progress: _Progress
) -> tuple[float, list[float]]:
    """Fit LensKit's model epoch by epoch through its trainer (what its ``train`` does), so
    that every epoch is timed and time to quality can stop it: (fit seconds, epoch seconds)."""
    from lenskit.training import TrainingOptions

    trainer = model.create_trainer(fit_input, TrainingOptions(rng=spec.seed))
    epochs: list[float] = []
    for epoch in range(1, spec.iterations + 1):
        t = time.perf_counter()
        trainer.train_epoch()
        epochs.append(time.perf_counter() - t)
        if progress.after_epoch(epoch):
            break
    trainer.finalize()
    return time.perf_counter() - progress.t0, epochs


_FITS = {"ours": _fit_ours, "implicit": _fit_implicit, "lenskit": _fit_lenskit}


def _ttq_fields(spec: RunSpec, progress: _Progress) -> dict[str, Any]:
    """The time-to-quality keys of a result: target, curve, reached, stop reason, best scores."""
    curve = progress.curve
    target = spec.target
    reached = [c for c in curve if c[RECALL] >= target]
    best = max(curve, key=lambda c: c[RECALL]) if curve else {}
    stopped = "target" if reached else "iterations" if len(curve) >= spec.iterations else "patience"
    return {
        "target": target,
        "curve": curve,
        "reached": bool(reached),
        "stopped": stopped,
        "seconds_to_target": reached[0]["seconds"] if reached else None,
        "eval_seconds": progress.eval_total,
        RECALL: best.get(RECALL, float("nan")),
        NDCG: best.get(NDCG, float("nan")),
    }


def run_spec(spec: RunSpec | Mapping[str, Any]) -> dict[str, Any]:
    """Run one benchmark in this process and return its result (JSON-friendly dict).

    Keys: ``epoch_seconds`` (per-epoch solve time), ``seconds_per_epoch`` (their median),
    ``fit_seconds`` (wall clock of fit), ``epochs``, ``peak_rss_mb`` (this process's peak resident
    memory at the end of fit), ``peak_rss_total_mb`` (after the final evaluation too),
    ``rss_before_fit_mb``, ``cuda_peak_mb`` (ours on CUDA), ``recall@20``, ``ndcg@20``,
    ``eval_seconds`` and, in time-to-quality mode, ``curve`` (per epoch: cumulative wall clock of
    training plus evaluations, recall, ndcg), ``reached`` and ``seconds_to_target``.
    """
    if not isinstance(spec, RunSpec):
        spec = RunSpec(**spec)
    import torch

    torch.set_num_threads(spec.threads)
    train, test = load_prepared(spec.dataset)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    eval_device = spec.eval_device or spec.device
    library = spec.library
    model, fit_input, vectors = _setup(spec, train)

    def score() -> dict[str, float]:
        u, i, off = vectors(model, users)
        return evaluate_embeddings(u, i, train, test, user_offsets=off, device=eval_device)

    on_cuda = spec.device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_mb()
    progress = _Progress(spec, score)
    fit_seconds, epoch_seconds = _FITS[library](spec, model, fit_input, progress)
    result: dict[str, Any] = {
        "spec": asdict(spec),
        "dataset": spec.dataset["name"],
        "model": spec.model,
        "library": library,
        "device": spec.device,
        "factors": spec.factors,
        "iterations": spec.iterations,
        "threads": spec.threads,
        "epochs": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": statistics.median(epoch_seconds) if epoch_seconds else float("nan"),
        "fit_seconds": fit_seconds,
        "train_seconds": fit_seconds - progress.eval_total,
        "rss_before_fit_mb": rss_before,
        # the peak up to the end of fit (data, libraries and training; with a target also the
        # per-epoch evaluations); the final evaluation's own peak is in peak_rss_total_mb
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20
        if on_cuda and library == "ours"
        else None,
    }
    if spec.target is not None:
        result.update(_ttq_fields(spec, progress))
    elif spec.evaluate:
        e0 = time.perf_counter()
        result.update(score())
        result["eval_seconds"] = time.perf_counter() - e0
    result["peak_rss_total_mb"] = peak_rss_mb()
    return result
