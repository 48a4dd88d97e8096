"""The solver interface: given the fixed side and the rows to update, return their new vectors.

One half-epoch of ALS is a `HalfProblem`: the fixed side's factor matrix F (with a column for the
bias when biases are on), the all-pairs weight a, and for each row u to update its observed
columns, values and regularization lambda_u. Every row's vector x_u solves

    (a * G + F_u^T D_u F_u + lambda_u I) x_u = F_u^T h_u - a * F^T o,      G = F^T F,

where D_u = diag(d_uj), h_uj = g_uj - d_uj * o_j, and o_j is the fixed score offset of column j
(its bias plus the global mean). A solver implements `solve_chunk` for one padded batch of rows
of similar length; the base class walks the degree buckets in memory-bounded chunks.

A Gaussian prior N(mu, P^-1) shared by all rows (posterior sampling with learned hyperparameters)
adds P to every row's matrix and P mu to its right-hand side; `shared` = a * G + P is the part
of the matrix common to all rows and `offset_rhs` = a * F^T o - P mu the common part of the
right-hand side (subtracted).

With `noise_scale` sigma > 0 (posterior sampling) an exact solver returns a draw from
N(A_u^-1 b_u, sigma^2 A_u^-1) instead of the solution A_u^-1 b_u, A_u being the matrix above.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from recsys.als.batching import Bucket
from recsys.als.weightings.base import Weighting


@dataclass
class HalfProblem:
    """Everything a solver needs for one half-epoch (rows of one side, the other side fixed)."""

    fixed: torch.Tensor  # (n_fixed, k) the fixed side F
    all_pairs_weight: float  # a
    offsets: torch.Tensor | None  # (n_fixed,) fixed score offset o_j, or None when all zero
    row_reg: torch.Tensor  # (n_rows,) lambda_u of every row
    weighting: Weighting
    buckets: list[Bucket]
    memory_budget_bytes: int
    noise_scale: float = 0.0  # sigma: > 0 draws each row from its Gaussian conditional posterior
    generator: torch.Generator | None = None  # random source of those draws
    prior_precision: torch.Tensor | None = None  # (k, k) P of a prior shared by all rows
    prior_mean: torch.Tensor | None = None  # (k,) mu of that prior (None: zero)
    gram: torch.Tensor | None = None  # (k, k) F^T F when precomputed (e.g. summed across ranks)

    def __post_init__(self) -> None:
        if self.gram is None:
            self.gram = self.fixed.T @ self.fixed
        if self.offsets is None:
            self.offset_rhs = torch.zeros_like(self.fixed[0])
            self.offsets_padded = None
        else:
            self.offset_rhs = self.all_pairs_weight * (self.fixed.T @ self.offsets)
            self.offsets_padded = torch.cat([self.offsets, self.offsets.new_zeros(1)])
        self.shared = self.all_pairs_weight * self.gram
        if self.prior_precision is not None:
            self.shared = self.shared + self.prior_precision
            if self.prior_mean is not None:
                self.offset_rhs = self.offset_rhs - self.prior_precision @ self.prior_mean

    @property
    def rank(self) -> int:
        return self.fixed.shape[1]

    @functools.cached_property
    def fixed_padded(self) -> torch.Tensor:
        """F with one zero row appended at index n_fixed, where the buckets' padding points
        (built on first use: solvers that gather from another table never pay for the copy)."""
        return torch.cat([self.fixed, self.fixed.new_zeros(1, self.rank)])

    def entry_terms(self, chunk: Bucket) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-entry quadratic weights d and right-hand side weights h = g - d * o, zero in
        padding (where d = g = 0 and the padded offset is 0)."""
        if self.offsets is None:
            return chunk.weight, chunk.target
        return chunk.weight, chunk.target - chunk.weight * self.offsets_padded[chunk.cols]


class Workspace:
    """Reusable scratch tensors, so the per-chunk temporaries are allocated once per fit.

    Allocating a fresh large tensor per chunk costs a page fault per 4 KiB page on first touch
    (large blocks come straight from the OS), which made the gathers several times slower than
    the arithmetic. Views of persistent buffers avoid that.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of `shape` (uninitialised) backed by the buffer `name`, grown when needed."""
        numel = 1
        for size in shape:
            numel *= size
        buf = self._buffers.get(name)
        if (
            buf is None
            or buf.numel() < numel
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)


#: working memory of one CPU chunk. Chunks of 4-1024 MiB ran Gowalla epochs equally fast (1-2 MiB
#: chunks, small enough for the core's cache, were slower: per-operation overhead), so this only
#: keeps the scratch memory of each worker small when the memory budget is large
CPU_CHUNK_BYTES = 32 << 20


class Solver(abc.ABC):
    """Updates every row of a `HalfProblem`; subclasses solve one padded chunk at a time."""

    #: the name the registry knows this solver by (set by `SOLVERS.register`)
    name: ClassVar[str] = ""
    #: whether `solve_chunk` starts from the rows' previous vectors (else it gets None)
    warm_start: ClassVar[bool] = True
    #: whether the solution is exact (to rounding): posterior sampling needs it
    exact: ClassVar[bool] = False
    #: parameters under which an approximate solver reaches the exact solution (to 1e-3) on
    #: small problems; the contract tests run every solver with them against the float64 oracle
    converged_params: ClassVar[dict[str, Any]] = {}

    @property
    def workspace(self) -> Workspace:
        """Scratch buffers reused across chunks and epochs, one set per thread (created on first
        use: the chunk workers of `solve` each fill their own)."""
        local = self.__dict__.setdefault("_workspaces", threading.local())
        if not hasattr(local, "workspace"):
            local.workspace = Workspace()
        return local.workspace

    def release(self) -> None:
        """Drop the scratch buffers of every thread (call when a fit or a fold-in is done)."""
        self.__dict__.pop("_workspaces", None)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[None]:
        """Scope of one fit or fold-in: the scratch buffers are reused inside it and released
        when it ends, normally or by an error."""
        try:
            yield
        finally:
            self.release()

    def solve(self, problem: HalfProblem, current: torch.Tensor | None) -> torch.Tensor:
        """New vectors for all rows (n_rows, k); `current` holds the previous ones (read only
        when the solver warm-starts, else it may be None).

        The result lives in the solver's scratch and stays valid until its next solve or
        `release`: callers copy what they keep (writing every half-epoch's result into fresh
        memory would cost a page fault per 4 KiB page, more than the copy). Rows in no bucket
        (rows without entries) are undefined: the caller sets them (the model zeroes them).

        On the CPU with T > 1 torch threads the chunks are solved by T worker threads, each
        running torch single-threaded, instead of one chunk at a time with T-thread operations:
        the per-chunk operations (batched factorisations and solves of small matrices, gathers)
        gain little from intra-op threads, while independent chunks run in parallel (torch
        releases the GIL). Each worker has its own scratch buffers, and chunks are sized so that
        all workers together stay within the memory budget. Rows are independent, so the result
        does not depend on the split; draws from a random generator (posterior sampling) are
        made by one thread to keep their order.
        """
        if self.warm_start and current is None:
            raise ValueError(f"{type(self).__name__} starts from the current vectors: pass them")
        state = self.prepare(problem)
        # kept across half-epochs: first-touching fresh memory costs more than the arithmetic
        # on it; rows in no bucket (empty rows) are left as they are, for the caller to set
        shape = (problem.row_reg.shape[0], problem.rank)
        out = self.workspace.take("solution", shape, problem.fixed)
        workers = self._workers(problem)
        chunks = [
            chunk
            for bucket in problem.buckets
            for chunk in bucket.chunks(self._chunk_rows(problem, bucket, workers))
        ]

        def solve_chunk(chunk: Bucket) -> None:
            previous = current[chunk.rows] if self.warm_start else None
            out[chunk.rows] = self.solve_chunk(problem, state, chunk, previous)

        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                solve_chunk(chunk)
        else:
            for _ in self._pool(workers).map(solve_chunk, chunks):
                pass
        return self.finish(problem, state, out)

    def _workers(self, problem: HalfProblem) -> int:
        if problem.fixed.device.type != "cpu" or problem.noise_scale > 0:
            return 1
        return max(1, torch.get_num_threads())

    def _chunk_rows(self, problem: HalfProblem, bucket: Bucket, workers: int) -> int:
        """Rows per chunk: the memory budget shared by the workers (on the CPU at most
        `CPU_CHUNK_BYTES` per chunk), and at least `workers` chunks per bucket so that every
        worker gets some of a large bucket."""
        budget = problem.memory_budget_bytes // workers
        if problem.fixed.device.type == "cpu":
            budget = min(budget, CPU_CHUNK_BYTES)
        by_memory = budget // max(1, self.bytes_per_row(problem, bucket))
        return max(1, min(by_memory, math.ceil(len(bucket) / workers)))

    def _pool(self, workers: int) -> ThreadPoolExecutor:
        """The solver's chunk workers (kept across calls), each with single-threaded torch."""
        size, pool = self.__dict__.get("_chunk_pool", (0, None))
        if pool is None or size != workers:
            if pool is not None:
                pool.shutdown(wait=True)
            pool = ThreadPoolExecutor(
                workers, thread_name_prefix="als-solve", initializer=torch.set_num_threads,
                initargs=(1,),
            )  # fmt: skip
            self.__dict__["_chunk_pool"] = (workers, pool)
        return pool

    def prepare(self, problem: HalfProblem) -> object:
        """Per-half-epoch work shared by all chunks (e.g. a factorisation of the Gram matrix)."""
        return None

    def finish(self, problem: HalfProblem, state: object, out: torch.Tensor) -> torch.Tensor:
        """The new vectors from the solved chunks `out` (scratch): by default `out` itself;
        solvers working in another basis map back to the original one."""
        return out

    @abc.abstractmethod
    def bytes_per_row(self, problem: HalfProblem, bucket: Bucket) -> int:
        """Working memory one row of `bucket` needs, used to bound the chunk size."""

    @abc.abstractmethod
    def solve_chunk(
        self, problem: HalfProblem, state: object, chunk: Bucket, current: torch.Tensor | None
    ) -> torch.Tensor:
        """New vectors (B, k) for the rows of one chunk (`current`: their previous vectors when
        the solver warm-starts, else None). The result may live in the thread's workspace: it
        is copied out before the thread's next chunk."""
