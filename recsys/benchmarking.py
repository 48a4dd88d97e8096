"""Benchmark building blocks: our ALS against `implicit`'s ALS, one run per fresh process.

`scripts/benchmark.py` is the command; this module holds the pieces it is made of so that they can
be tested: dataset preparation (cached as ``.npz`` train/test CSR pairs, no pickle), one benchmark
run (:func:`run_spec`: fit, per-epoch seconds, peak memory, Recall@20 / NDCG@20 with the same
:mod:`recsys.eval` code for both libraries), isolation of each run in a child process
(:func:`run_isolated`, so that the peak resident memory belongs to that run alone), the ratio
ours / implicit, markdown tables, the machine description and the PNG plots.

Fairness rules the runs follow (they are also written into every result):

* Same data, factors, iterations and thread count: ``torch.set_num_threads(T)`` for ours,
  ``num_threads=T`` for implicit, whose OpenBLAS pool is limited to one thread during ``fit`` as
  implicit itself recommends (its solver parallelises with OpenMP).
* Same objective for the like-for-like timing (``ours-hkv``): Hu-Koren-Volinsky with confidence
  ``c = 1 + alpha * r``, constant regularization, no biases. implicit (>= 0.5) uses the value it is
  given as the confidence times its ``alpha``, so it receives the matrix ``1 + alpha * r`` with its
  own ``alpha = 1``: both then minimise the same loss. ``ours-ials`` (Rendle et al.'s iALS) is our
  quality model and has a different objective.
* Seconds per epoch are the median of the per-epoch solve times: ``model.history[i]["seconds"]``
  for ours (our exact loss is computed after that timer stops, and counted in the fit total) and
  the time implicit's fit callback reports (both half-epochs, no loss) for implicit. On CUDA the
  device is synchronised before each reading. The total fit time is the wall clock of ``fit``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.memory import current_rss_mb, peak_rss_mb

__all__ = [
    "MODELS",
    "DatasetHyper",
    "RunSpec",
    "add_ratios",
    "dataset_defaults",
    "evaluate_embeddings",
    "load_prepared",
    "machine_info",
    "markdown_table",
    "parse_dataset",
    "prepare_dataset",
    "rounds_table",
    "run_isolated",
    "run_spec",
    "write_plots",
]

#: model name -> (library, weighting or solver). ``ours-*`` use recsys.als.ALS, ``implicit-*``
#: implicit's AlternatingLeastSquares (CG with 3 steps, or its exact Cholesky path).
MODELS: dict[str, tuple[str, str]] = {
    "ours-hkv": ("ours", "hkv"),
    "ours-ials": ("ours", "ials"),
    "implicit-cg": ("implicit", "cg"),
    "implicit-cholesky": ("implicit", "cholesky"),
}

#: the implicit model every ``ours-*`` run is compared against
REFERENCE_MODEL = "implicit-cg"

METRIC_K = 20
RECALL = f"recall@{METRIC_K}"
NDCG = f"ndcg@{METRIC_K}"


# ------------------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class DatasetHyper:
    """Hyperparameters of the two objectives on one dataset.

    ``hkv_*`` are used by ``ours-hkv`` and by implicit (the same loss); ``ials_*`` by ``ours-ials``.
    """

    hkv_alpha: float
    hkv_regularization: float
    ials_regularization: float
    ials_alpha0: float
    ials_reg_exponent: float


#: Defaults per dataset family. Gowalla's iALS values are the ones DESIGN.md measured; its HKV
#: values give the observed/unobserved weight balance and the regularization of that iALS setting
#: on an average Gowalla user (alpha = 1 / alpha0 - 1, lambda ~ lambda_iALS * N), not tuned.
#: MovieLens 100K's are the best of a coarse grid at 64 factors and 10 epochs (HKV alpha 1/5/20 x
#: lambda 1/10/50, iALS alpha0 0.05/0.2/0.5 x lambda 0.005/0.02/0.08), scored on u1.test itself:
#: sane starting points, not tuned optima. Override them on the command line.
_DEFAULTS: dict[str, DatasetHyper] = {
    "gowalla": DatasetHyper(99.0, 150.0, 0.0035, 0.01, 1.0),
    "ml-100k": DatasetHyper(5.0, 50.0, 0.02, 0.2, 1.0),
    "synthetic": DatasetHyper(10.0, 10.0, 0.005, 0.05, 1.0),
}


def dataset_defaults(name: str) -> DatasetHyper:
    """The default hyperparameters for a dataset name (see :func:`parse_dataset`)."""
    return _DEFAULTS[parse_dataset(name)["family"]]


_SYNTH_RE = re.compile(r"^synthetic:(?P<preset>[a-z0-9_]+)(?:\*(?P<mult>\d+))?$")


def parse_dataset(name: str) -> dict[str, Any]:
    """Validate a dataset name: ``gowalla``, ``ml-100k`` or ``synthetic:<preset>[*<multiple>]``.

    ``synthetic:small*4`` is the ``small`` preset with 4x the users and 4x the interactions (same
    items, same degree distribution): the scaling table's way of growing nnz.
    """
    if name in ("gowalla", "ml-100k"):
        return {"family": name, "name": name}
    m = _SYNTH_RE.match(name)
    if m is None:
        raise ValueError(
            f"unknown dataset {name!r}; use 'gowalla', 'ml-100k' or 'synthetic:<preset>[*<n>]' "
            "(e.g. synthetic:small, synthetic:small*4)"
        )
    from recsys.data.synthetic import SYNTHETIC_PRESETS

    preset = m.group("preset")
    if preset not in SYNTHETIC_PRESETS:
        raise ValueError(
            f"unknown synthetic preset {preset!r} in {name!r}; choose one of "
            f"{sorted(SYNTHETIC_PRESETS)}"
        )
    mult = int(m.group("mult") or 1)
    if mult < 1:
        raise ValueError(f"the multiple in {name!r} must be >= 1")
    return {"family": "synthetic", "name": name, "preset": preset, "multiple": mult}


def _binary(matrix: Any) -> sp.csr_matrix:
    """A canonical float32 users x items CSR with every stored entry set to 1 (implicit data)."""
    csr = sp.csr_matrix(getattr(matrix, "matrix", matrix), dtype=np.float32)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.data[:] = 1.0
    return csr


def _train_test(result: Any) -> tuple[Any, Any]:
    """(train, test) from a loader's result: a Split-like object or a 2-tuple."""
    if hasattr(result, "train") and hasattr(result, "test"):
        return result.train, result.test
    if isinstance(result, tuple) and len(result) >= 2:
        return result[0], result[1]
    raise TypeError(f"expected a train/test split from the loader, got {type(result).__name__}")


def _load_raw(info: Mapping[str, Any], data_root: Path, seed: int) -> tuple[Any, Any]:
    """(train, test) Interactions (or CSR) for a parsed dataset name."""
    from recsys import data as rdata

    family = info["family"]
    if family == "gowalla":
        path = data_root / "gowalla"
        if not path.is_dir():
            raise FileNotFoundError(f"Gowalla (LightGCN train.txt/test.txt) not found at {path}")
        return _train_test(rdata.load_lightgcn(path))
    if family == "ml-100k":
        path = data_root / "ml-100k"
        if not path.is_dir():
            raise FileNotFoundError(f"MovieLens 100K not found at {path}")
        return _train_test(rdata.load_movielens_100k_split(path, "u1", titles=False))
    from recsys.data.synthetic import SYNTHETIC_PRESETS, synthetic_preset

    preset = SYNTHETIC_PRESETS[info["preset"]]
    mult = info["multiple"]
    overrides: dict[str, Any] = {"values": "binary"}
    if mult > 1:
        overrides["n_users"] = preset["n_users"] * mult
        overrides["n_interactions"] = preset["n_interactions"] * mult
    from recsys.data.splits import random_holdout

    full = synthetic_preset(info["preset"], seed=seed, **overrides)
    return _train_test(random_holdout(full, test_fraction=0.2, seed=seed))


def _aligned(train: sp.csr_matrix, test: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Pad train and test to one shape (loaders keep one id space; this only guards the shape)."""
    n_users = max(train.shape[0], test.shape[0])
    n_items = max(train.shape[1], test.shape[1])
    train = sp.csr_matrix((train.data, train.indices, train.indptr), shape=train.shape)
    if train.shape != (n_users, n_items):
        train.resize((n_users, n_items))
    if test.shape != (n_users, n_items):
        test = test.copy()
        test.resize((n_users, n_items))
    return train, test


def _data_code_hash() -> str:
    """A short hash of the data-layer source: a changed loader or generator voids the cache."""
    import hashlib

    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted((Path(__file__).parent / "data").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def prepare_dataset(
    name: str, data_root: str | os.PathLike, cache_dir: str | os.PathLike, seed: int = 0
) -> dict[str, Any]:
    """Load (or generate) a dataset once, binarize it and cache train/test as ``.npz`` files.

    The cache key holds the name, the seed and a hash of ``recsys/data``'s source code.

    Returns a JSON-friendly description: ``name``, ``train``/``test`` file paths and the shape,
    nnz and user counts. Child processes read the cached files with :func:`load_prepared`.
    """
    info = parse_dataset(name)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + f"-seed{seed}-{_data_code_hash()}"
    train_path, test_path = cache / f"{stem}.train.npz", cache / f"{stem}.test.npz"
    meta_path = cache / f"{stem}.json"
    if train_path.is_file() and test_path.is_file() and meta_path.is_file():
        return json.loads(meta_path.read_text())
    start = time.perf_counter()
    train_raw, test_raw = _load_raw(info, Path(data_root), seed)
    train, test = _aligned(_binary(train_raw), _binary(test_raw))
    overlap = train.multiply(test).nnz
    sp.save_npz(train_path, train, compressed=False)
    sp.save_npz(test_path, test, compressed=False)
    meta = {
        "name": name,
        "family": info["family"],
        "train": str(train_path),
        "test": str(test_path),
        "n_users": int(train.shape[0]),
        "n_items": int(train.shape[1]),
        "train_nnz": int(train.nnz),
        "test_nnz": int(test.nnz),
        "test_users": int((np.diff(test.indptr) > 0).sum()),
        "train_test_overlap": int(overlap),
        "seed": seed,
        "prepare_seconds": time.perf_counter() - start,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def load_prepared(meta: Mapping[str, Any]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The cached (train, test) CSR matrices of :func:`prepare_dataset` (no pickle involved)."""
    train = sp.load_npz(meta["train"]).tocsr().astype(np.float32)
    test = sp.load_npz(meta["test"]).tocsr().astype(np.float32)
    return train, test


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
    if library == "ours":
        model = _ours_model(spec)
        fit_input = train
        vectors: Callable[[Any, np.ndarray], tuple] = _ours_vectors
    else:
        import implicit.cpu.als  # noqa: F401  (loads its BLAS, so that the limit below reaches it)
        import threadpoolctl

        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            model = _implicit_model(spec)
        fit_input = _implicit_input(train, spec.hyper["hkv_alpha"])
        vectors = _implicit_vectors

    def score() -> dict[str, float]:
        u, i, off = vectors(model, users)
        return evaluate_embeddings(u, i, train, test, user_offsets=off, device=eval_device)

    on_cuda = spec.device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    curve: list[dict[str, float]] = []
    eval_total = 0.0
    reported: list[float] = []  # implicit's own per-epoch timer
    synced: list[float] = []  # implicit on CUDA: synchronised epoch times, evaluations excluded
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    resumed = t0  # when training last resumed (after fit started or an evaluation ended)

    def after_epoch(epoch: int) -> bool:
        """Time-to-quality bookkeeping; True once the target is reached."""
        nonlocal eval_total, resumed
        if spec.target is None:
            return False
        e0 = time.perf_counter()
        metrics = score()
        _sync(eval_device)
        now = time.perf_counter()
        eval_total += now - e0
        curve.append({"epoch": epoch, "seconds": now - t0, **metrics})
        resumed = time.perf_counter()
        if metrics[RECALL] >= spec.target:
            return True
        best = max(range(len(curve)), key=lambda j: curve[j][RECALL])
        return spec.patience is not None and len(curve) - 1 - best >= spec.patience

    if library == "ours":

        def ours_callback(epoch: int, loss: float, seconds: float, m: Any) -> bool:
            return after_epoch(epoch)

        model.fit(fit_input, callback=ours_callback)
        _sync(spec.device)
        fit_seconds = time.perf_counter() - t0
        epoch_seconds = [float(h["seconds"]) for h in model.history]
    else:

        def implicit_callback(iteration: int, elapsed: float, loss: Any) -> None:
            _sync(spec.device)
            synced.append(time.perf_counter() - resumed)
            reported.append(float(elapsed))
            if after_epoch(iteration + 1):
                raise _TargetReached

        blas_limit = threadpoolctl.threadpool_limits(limits=1, user_api="blas")
        with blas_limit, contextlib.suppress(_TargetReached):
            model.fit(fit_input, show_progress=False, callback=implicit_callback)
        _sync(spec.device)
        fit_seconds = time.perf_counter() - t0
        # implicit's own timer does not wait for the GPU: on CUDA use the synchronised times
        # (the first also holds the transfers to the device; the median discounts it)
        epoch_seconds = synced if on_cuda else reported
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
        "train_seconds": fit_seconds - eval_total,
        "rss_before_fit_mb": rss_before,
        # the peak up to the end of fit (data, libraries and training; with a target also the
        # per-epoch evaluations); the final evaluation's own peak is in peak_rss_total_mb
        "peak_rss_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20
        if on_cuda and library == "ours"
        else None,
    }
    if spec.target is not None:
        reached = [c for c in curve if c[RECALL] >= spec.target]
        result["target"] = spec.target
        result["curve"] = curve
        result["reached"] = bool(reached)
        result["stopped"] = (
            "target" if reached else "iterations" if len(curve) >= spec.iterations else "patience"
        )
        result["seconds_to_target"] = reached[0]["seconds"] if reached else None
        result["eval_seconds"] = eval_total
        best = max(curve, key=lambda c: c[RECALL]) if curve else {}
        result[RECALL] = best.get(RECALL, float("nan"))
        result[NDCG] = best.get(NDCG, float("nan"))
    elif spec.evaluate:
        e0 = time.perf_counter()
        result.update(score())
        result["eval_seconds"] = time.perf_counter() - e0
    result["peak_rss_total_mb"] = peak_rss_mb()
    return result


# ------------------------------------------------------------------------------ isolation
def run_isolated(
    spec: RunSpec, timeout: float | None = None, workdir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Run :func:`run_spec` in a fresh Python process so that its peak memory is its own.

    The spec goes in and the result comes back as JSON files in ``workdir``. A crash, a timeout
    or an exception becomes a result with ``error`` set (and the run's identity), never an
    exception here, so one failing configuration does not end a long benchmark.
    """
    import tempfile

    work = Path(workdir or tempfile.mkdtemp(prefix="recsys-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    spec_path, out_path = work / f"spec-{tag}.json", work / f"result-{tag}.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "recsys.benchmarking", "--worker", str(spec_path), str(out_path)]
    failure = None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0 or not out_path.is_file():
            log = work / f"failed-{tag}.log"
            log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
            lines = [x for x in (proc.stderr or proc.stdout or "").splitlines() if x.strip()]
            last = lines[-1].strip() if lines else "no output"
            failure = f"exit code {proc.returncode}: {last} (full log: {log})"
    except subprocess.TimeoutExpired:
        failure = f"timed out after {timeout} s"
    finally:
        spec_path.unlink(missing_ok=True)
    if failure is not None:
        return _failed(spec, failure)
    result = json.loads(out_path.read_text())
    out_path.unlink(missing_ok=True)
    result["isolated"] = True
    return result


def _failed(spec: RunSpec, error: str) -> dict[str, Any]:
    return {
        "spec": asdict(spec),
        "dataset": spec.dataset["name"],
        "model": spec.model,
        "library": spec.library,
        "device": spec.device,
        "factors": spec.factors,
        "iterations": spec.iterations,
        "threads": spec.threads,
        "error": error,
    }


def run_in_process(spec: RunSpec) -> dict[str, Any]:
    """:func:`run_spec` in this process (fast, for smoke runs); failures become ``error``.

    The peak memory is then the whole process's peak so far, not the run's own: the result says
    so with ``isolated=False``.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        result = run_spec(spec)
    except Exception as exc:
        return _failed(spec, f"{type(exc).__name__}: {exc}")
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting as it was
    result["isolated"] = False
    return result


def _worker_main(spec_path: str, out_path: str) -> None:
    spec = RunSpec(**json.loads(Path(spec_path).read_text()))
    result = run_spec(spec)
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out_path)


# ------------------------------------------------------------------------------ ratios
def _tag(r: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A tag of the run's spec (``sweep`` of the scaling mode, ``round`` of ``--rounds``)."""
    return r.get("spec", {}).get("tags", {}).get(name, default)


def _key(r: Mapping[str, Any]) -> tuple:
    return (
        r["dataset"],
        r["device"],
        r["factors"],
        r["iterations"],
        r["threads"],
        _tag(r, "sweep"),
        _tag(r, "round"),
    )


def _ok(r: Mapping[str, Any]) -> bool:
    return not r.get("error")


def add_ratios(results: Sequence[dict[str, Any]], reference: str = REFERENCE_MODEL) -> None:
    """Set ``ratio_epoch`` and ``ratio_fit`` (ours / reference) on every ``ours-*`` result.

    The reference is the implicit run with the same dataset, device, factors, iterations, threads
    (and scaling sweep, and round of ``--rounds``) in the same invocation; without one the ratios
    are None.
    """
    refs = {_key(r): r for r in results if r["model"] == reference and _ok(r)}
    for r in results:
        if r["library"] != "ours":
            continue
        ref = refs.get(_key(r))
        ok = ref is not None and _ok(r)
        r["reference"] = reference if ok else None
        r["ratio_epoch"] = r["seconds_per_epoch"] / ref["seconds_per_epoch"] if ok else None
        r["ratio_fit"] = r["fit_seconds"] / ref["fit_seconds"] if ok else None


def add_ttq_ratios(results: Sequence[dict[str, Any]], reference: str = REFERENCE_MODEL) -> None:
    """``ratio_ttq``: seconds to target / the fastest reference run's (same dataset and device)."""
    best: dict[tuple, float] = {}
    for r in results:
        if r["model"] == reference and _ok(r) and r.get("seconds_to_target") is not None:
            k = (r["dataset"], r["device"])
            best[k] = min(best.get(k, math.inf), r["seconds_to_target"])
    for r in results:
        ref = best.get((r["dataset"], r["device"]))
        mine = r.get("seconds_to_target") if _ok(r) else None
        r["ratio_ttq"] = mine / ref if ref and mine is not None else None
        r["reference_seconds_to_target"] = ref


# ------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(module)
    except Exception:
        return None


def _git_commit(repo: Path) -> dict[str, Any]:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": None, "dirty": None}


def machine_info(threads: int, device: str = "cpu") -> dict[str, Any]:
    """What BENCHMARKS.md must quote: CPU, cores, load, library versions, threads, the GPU."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "implicit": _version("implicit"),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "threads": threads,
        "torch_threads": f"torch.set_num_threads({threads})",
        "implicit_threads": f"num_threads={threads}, OpenBLAS limited to 1 during fit",
        "torch_mkl": bool(torch.backends.mkl.is_available()),
        "device": device,
        "gpu": None,
        **_git_commit(Path(__file__).resolve().parents[1]),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
        try:
            import implicit.gpu

            info["implicit_gpu"] = bool(implicit.gpu.HAS_CUDA)
        except Exception:
            info["implicit_gpu"] = False
    return info


def machine_markdown(info: Mapping[str, Any]) -> str:
    """The machine block printed above the tables."""
    lines = [
        f"- date: {info['date']}; commit {info.get('commit')}"
        + (" (uncommitted changes)" if info.get("dirty") else ""),
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable); load "
        f"average at start {_fmt_load(info.get('load_average'))}",
        f"- threads: {info['threads']} for both ({info['torch_threads']}; implicit "
        f"{info['implicit_threads']})",
        f"- versions: python {info['python']}, torch {info['torch']}, implicit {info['implicit']}, "
        f"numpy {info['numpy']}, scipy {info['scipy']}",
    ]
    load = info.get("load_average")
    if load and info.get("cores_usable") and load[0] > 0.25 * info["cores_usable"]:
        lines.append(
            f"- WARNING: the machine was busy at the start (1-minute load {load[0]:.2f} on "
            f"{info['cores_usable']} cores): other processes distort these timings"
        )
    if info.get("gpu"):
        lines.append(
            f"- GPU: {info['gpu']} (CUDA {info.get('cuda')}); implicit GPU build: "
            f"{'yes' if info.get('implicit_gpu') else 'no (ours alone)'}"
        )
    return "\n".join(lines)


def _fmt_load(load: Any) -> str:
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)


# ------------------------------------------------------------------------------ tables
def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -(digits - 1):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 3 decimals, None and NaN print as '-'."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_num(c) for c in row) + " |")
    return "\n".join(out)


def comparison_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The main table: speed, memory and quality per (dataset, model, factors)."""
    headers = [
        "dataset",
        "model",
        "device",
        "factors",
        "epochs",
        "s/epoch (median)",
        "fit s",
        "peak RSS MiB",
        "GPU peak MiB",
        "Recall@20",
        "NDCG@20",
        "ours/implicit s/epoch",
        "ours/implicit fit s",
    ]
    rows = []
    for r in results:
        if not _ok(r):
            rows.append(
                [r["dataset"], r["model"], r["device"], r["factors"], f"failed: {r['error'][:80]}"]
                + ["-"] * 8
            )
            continue
        rows.append(
            [
                r["dataset"],
                r["model"],
                r["device"],
                r["factors"],
                r["epochs"],
                r["seconds_per_epoch"],
                r["fit_seconds"],
                r["peak_rss_mb"],
                r.get("cuda_peak_mb"),
                r.get(RECALL),
                r.get(NDCG),
                r.get("ratio_epoch"),
                r.get("ratio_fit"),
            ]
        )
    return markdown_table(headers, rows)


def rounds_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Speed over interleaved rounds (``--rounds``): per (dataset, model, factors), the median of
    the runs' seconds per epoch and of the per-round ratios ours / implicit, with their ranges.

    Each ratio divides runs of the same round, which ran next to each other, so a slow spell of
    a shared machine moves both sides of a ratio; the range shows how much the ratio still moved.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in results:
        if _ok(r) and _tag(r, "round") is not None:
            key = (r["dataset"], r["model"], r["device"], r["factors"])
            groups.setdefault(key, []).append(r)

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    headers = [
        "dataset",
        "model",
        "device",
        "factors",
        "rounds",
        "s/epoch: median (range)",
        "ours/implicit s/epoch: median (range)",
    ]
    rows = []
    for (dataset, model, device, factors), runs in groups.items():
        ratios = [r["ratio_epoch"] for r in runs if r.get("ratio_epoch") is not None]
        rows.append(
            [
                dataset,
                model,
                device,
                factors,
                len(runs),
                spread([r["seconds_per_epoch"] for r in runs]),
                spread(ratios),  # "-" for implicit, which has no ratio
            ]
        )
    return markdown_table(headers, rows)


def ttq_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Time to quality: seconds (training + per-epoch evaluation) until Recall@20 >= target."""
    headers = [
        "dataset",
        "model",
        "device",
        "factors",
        "target",
        "reached at epoch",
        "seconds to target",
        "best Recall@20",
        "eval s (total)",
        "ours/implicit",
    ]
    rows = []
    for r in results:
        if not _ok(r):
            rows.append(
                [r["dataset"], r["model"], r["device"], r["factors"], f"failed: {r['error'][:80]}"]
                + ["-"] * 5
            )
            continue
        epoch = next((c["epoch"] for c in r["curve"] if c[RECALL] >= r["target"]), None)
        rows.append(
            [
                r["dataset"],
                r["model"],
                r["device"],
                r["factors"],
                r["target"],
                epoch if epoch is not None else f"no ({r['stopped']}, {len(r['curve'])} epochs)",
                r.get("seconds_to_target"),
                r.get(RECALL),
                r.get("eval_seconds"),
                r.get("ratio_ttq") if r["library"] == "ours" else None,
            ]
        )
    return markdown_table(headers, rows)


def scaling_table(results: Sequence[Mapping[str, Any]], meta: Mapping[str, Mapping]) -> str:
    """Seconds per epoch against nnz and factors."""
    headers = [
        "sweep",
        "dataset",
        "users",
        "items",
        "train nnz",
        "model",
        "factors",
        "s/epoch (median)",
        "peak RSS MiB",
        "ours/implicit s/epoch",
    ]
    rows = []
    for r in results:
        m = meta.get(r["dataset"], {})
        lead = [
            _tag(r, "sweep", "-"),
            r["dataset"],
            m.get("n_users"),
            m.get("n_items"),
            m.get("train_nnz"),
            r["model"],
            r["factors"],
        ]
        if not _ok(r):
            rows.append([*lead, f"failed: {r['error'][:80]}", "-", "-"])
            continue
        rows.append([*lead, r["seconds_per_epoch"], r["peak_rss_mb"], r.get("ratio_epoch")])
    return markdown_table(headers, rows)


# ------------------------------------------------------------------------------ plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(results: Iterable[Mapping[str, Any]], x: str, y: str) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in results:
        if _ok(r) and r.get(x) is not None and r.get(y) is not None:
            out.setdefault(r["model"], []).append((r[x], r[y]))
    return {k: sorted(v) for k, v in out.items()}


def write_plots(
    out_dir: str | os.PathLike,
    table: Sequence[Mapping[str, Any]] = (),
    ttq: Sequence[Mapping[str, Any]] = (),
    scaling: Sequence[Mapping[str, Any]] = (),
    meta: Mapping[str, Mapping[str, Any]] | None = None,
    suffix: str = "",
) -> list[Path]:
    """PNG plots (headless): Recall@20 vs factors and vs seconds per dataset (from the table and
    the time-to-quality curves), and seconds per epoch vs nnz and vs factors (scaling)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    meta = meta or {}

    def save(fig: Any, name: str) -> None:
        path = out / f"{name}{suffix}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for ds in dict.fromkeys(r["dataset"] for r in [*table, *ttq]):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds)
        rows = [r for r in table if r["dataset"] == ds]
        if rows:
            fig, ax = plt.subplots(figsize=(6, 4))
            for model, pts in _series(rows, "factors", RECALL).items():
                ax.plot(*zip(*pts, strict=True), marker="o", label=model, color=_color(model))
            ax.set(xscale="log", xlabel="factors", ylabel="Recall@20", title=f"{ds}: quality")
            ax.set_xticks(sorted({r["factors"] for r in rows}))
            _plain_ticks(ax)
            ax.legend()
            ax.grid(alpha=0.3)
            save(fig, f"recall_vs_factors_{safe}")
        curves = [r for r in ttq if r["dataset"] == ds and _ok(r)]
        if rows or curves:
            fig, ax = plt.subplots(figsize=(6.5, 4.2))
            xs_all: list[float] = []
            for j, r in enumerate(curves):
                xs = [c["seconds"] for c in r["curve"]]
                ys = [c[RECALL] for c in r["curve"]]
                xs_all += xs
                ax.plot(
                    xs,
                    ys,
                    marker=".",
                    color=_color(r["model"]),
                    linestyle=("-", "--", "-.", ":")[j % 4],
                    label=f"{r['model']} f={r['factors']}: per epoch, training + evaluation",
                )
            if curves:
                ax.axhline(
                    curves[0]["target"],
                    color="grey",
                    linestyle=":",
                    linewidth=1,
                    label=f"target {curves[0]['target']:g}",
                )
            for model, pts in _series(rows, "fit_seconds", RECALL).items():
                xs, ys = zip(*pts, strict=True)
                xs_all += xs
                ax.scatter(
                    xs,
                    ys,
                    marker="s",
                    color=_color(model),
                    label=f"{model}: after fit (fit seconds)",
                )
            for r in rows:
                if _ok(r) and r.get(RECALL) is not None:
                    ax.annotate(
                        f"f={r['factors']}",
                        (r["fit_seconds"], r[RECALL]),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:
                from matplotlib.ticker import LogLocator

                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                _plain_ticks(ax)
            ax.set(
                xlabel="wall-clock seconds", ylabel="Recall@20", title=f"{ds}: quality against time"
            )
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            save(fig, f"recall_vs_seconds_{safe}")

    nnz_rows = [r for r in scaling if _tag(r, "sweep") == "nnz"]
    if nnz_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        pts: dict[str, list[tuple]] = {}
        for r in nnz_rows:
            nnz = meta.get(r["dataset"], {}).get("train_nnz")
            if _ok(r) and nnz:
                pts.setdefault(r["model"], []).append((nnz, r["seconds_per_epoch"]))
        for model, p in pts.items():
            f = nnz_rows[0]["factors"]
            ax.plot(
                *zip(*sorted(p), strict=True),
                marker="o",
                label=f"{model} f={f}",
                color=_color(model),
            )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="training nnz",
            ylabel="seconds per epoch",
            title="cost against nnz",
        )
        ax.legend()
        ax.grid(alpha=0.3, which="both")
        save(fig, "seconds_vs_nnz")
    f_rows = [r for r in scaling if _tag(r, "sweep") == "factors"]
    if f_rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for model, p in _series(f_rows, "factors", "seconds_per_epoch").items():
            ax.plot(*zip(*p, strict=True), marker="o", label=model, color=_color(model))
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="factors",
            ylabel="seconds per epoch",
            title=f"cost against factors ({f_rows[0]['dataset']})",
        )
        ax.set_xticks(sorted({r["factors"] for r in f_rows}))
        _plain_ticks(ax)
        ax.legend()
        ax.grid(alpha=0.3, which="both")
        save(fig, "seconds_vs_factors")
    return written


def _color(model: str) -> str:
    """One colour per model across all plots."""
    names = list(MODELS)
    return f"C{names.index(model) if model in names else len(names)}"


def _plain_ticks(ax: Any) -> None:
    """Plain numbers on a log x axis (factors 32, 64, ...; seconds 20, 50, ...), no minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(NullFormatter())


if __name__ == "__main__":  # child-process entry of run_isolated
    if len(sys.argv) != 4 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m recsys.benchmarking --worker SPEC.json RESULT.json")
    _worker_main(sys.argv[2], sys.argv[3])
