"""ALS across processes with `torch.distributed`: Gloo on the CPU, NCCL on CUDA (one GPU per rank).

Launch one process per rank (``torchrun --nproc_per_node=N``); every rank calls
``ALS.fit(user_items, distributed=True)`` with the same matrix and the same model settings.

**Sharding.** Users and items are cut into contiguous index ranges, one per rank, balanced by
(interactions + 1) per row (:func:`shard_plan`). The interaction structures a rank builds (the
degree buckets of its users and of its items, and the observed entries of its items for the loss)
hold only its ranges, so their memory falls as 1/N; they dominate a fit's memory (measured on
the ML-20M-scale set at 64 factors: about 1.5 GB for its 20 M interactions in one process, 0.8 GB
per rank with two, against 42 MB for all factors). Balancing by interactions rather than
by row count keeps both that memory and the solve time (linear in a row's interactions for all
but tiny rows) even when ids correlate with activity (e.g. items numbered in the order a catalog
got them, the older ones having more interactions); the + 1 charges each row its fixed cost, so
empty rows still spread.

**Factors.** Between exchanges a rank keeps only its slices of the user and item factors. A
half-epoch needs the whole fixed side (a rank's rows touch nearly all of it), so it is
all-gathered at the start of its half-epoch and dropped at the end, before the other side is
gathered: outside the callback at most one full table lives at a time, plus the slices of the
other side.

**One epoch on rank r** (identical arithmetic to one process, except summation order):

1. user half: the full item table Y is all-gathered from the slices; the Gram matrix
   G = Y^T Y (bias column included) is the sum of every rank's Y_r^T Y_r, summed with one
   all-reduce (k x k); rank r solves its users against Y; Y is dropped;
2. item half: the same with the all-gathered user table X, X^T X and rank r's items;
3. the loss: each rank sums its items' observed terms (against the full X, still at hand), its
   slices' Gram matrices and regularization in float64, and one all-reduce adds them up
   (:meth:`ShardedStrategy.loss_parts`);
4. with a callback, Y is gathered again and the model holds the full factors while it runs on
   every rank (evaluation and checkpoints on rank 0); the next user half reuses that Y.

Exchanging whole tables (all-gather) rather than only the rows a shard's interactions touch keeps
the exchange one collective per half-epoch; with few ranks nearly every row is needed anyway
(with 2 ranks on MovieLens-sized data every item appears in both user shards). At the end every
rank holds the full, identical factors, so everything after `fit` works as for a single-process
model.

**Failures.** Every collective runs under the process group's timeout
(:func:`init_process_group`); a collective that fails because another rank died or stopped
answering raises :class:`DistributedError` naming the operation, the time waited and the likely
cause, instead of hanging. A solve that fails on one rank (a singular system) is agreed on by all
ranks, which then raise the same `DivergenceError`. Processes should exit with ``os._exit`` after
a `DistributedError`: an orderly interpreter shutdown can block on the broken process group.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from recsys.als.loss import Observed, Side, loss_sums
from recsys.als.protocol import FactorModel
from recsys.als.solvers.base import Workspace
from recsys.als.training import SIDES, Callback, Strategy, train

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Communicator",
    "DistributedError",
    "Partition",
    "ShardedStrategy",
    "Slice",
    "check_agreement",
    "init_process_group",
    "launched_with_torchrun",
    "local_device",
    "publish",
    "shard_plan",
    "shutdown",
    "train_sharded",
]

#: Seconds a rank waits in a collective for the others before failing (torch's own default is
#: 30 minutes). It must exceed the longest gap between collectives: one half-epoch of the slowest
#: rank, plus rank 0's evaluation and checkpoint in the callback.
DEFAULT_TIMEOUT_S = 600.0

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

#: the timeout the process group was created with (for error messages)
_timeout_s: float | None = None


class DistributedError(RuntimeError):
    """A collective failed: another rank died or hung past the timeout, or the group broke."""


# ------------------------------------------------------------------------------ partitions
@dataclass(frozen=True)
class Partition:
    """Contiguous ranges of rows, one per rank: rank r owns rows ``bounds[r]:bounds[r + 1]``."""

    bounds: tuple[int, ...]

    def __post_init__(self) -> None:
        b = np.asarray(self.bounds)
        if b.ndim != 1 or b.size < 2 or b[0] != 0 or (np.diff(b) < 0).any():
            raise ValueError(f"bounds must rise from 0, one more than the parts: {self.bounds}")

    @classmethod
    def balanced(cls, weights: np.ndarray, parts: int) -> Partition:
        """Cut rows 0..n-1 into `parts` contiguous ranges of nearly equal total weight.

        Each cut goes where the running total is closest to r/parts of the whole; every range
        holds at least one row when there are at least `parts` rows (else one row each, first).
        """
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        weights = np.asarray(weights, dtype=np.float64)
        n = weights.size
        if n <= parts:
            return cls(tuple(min(r, n) for r in range(parts + 1)))
        prefix = np.concatenate([[0.0], np.cumsum(weights)])
        targets = prefix[-1] * np.arange(1, parts) / parts
        right = np.searchsorted(prefix, targets).clip(1, n)
        left = right - 1
        cuts = np.where(targets - prefix[left] <= prefix[right] - targets, left, right)
        bounds = [0]
        for r, cut in enumerate(cuts, start=1):  # keep >= 1 row per range
            bounds.append(int(min(max(cut, bounds[-1] + 1), n - (parts - r))))
        bounds.append(n)
        return cls(tuple(bounds))

    @property
    def parts(self) -> int:
        return len(self.bounds) - 1

    @property
    def total(self) -> int:
        return self.bounds[-1]

    @property
    def sizes(self) -> list[int]:
        return [hi - lo for lo, hi in self.ranges()]

    def range(self, rank: int) -> tuple[int, int]:
        return self.bounds[rank], self.bounds[rank + 1]

    def ranges(self) -> Iterator[tuple[int, int]]:
        return (self.range(r) for r in range(self.parts))


def shard_plan(matrix: sp.csr_matrix, parts: int) -> tuple[Partition, Partition]:
    """The user and item partitions of `matrix` (users x items) over `parts` ranks."""
    user_weights = np.diff(matrix.indptr) + 1
    item_weights = np.bincount(matrix.indices, minlength=matrix.shape[1]) + 1
    return Partition.balanced(user_weights, parts), Partition.balanced(item_weights, parts)


# ------------------------------------------------------------------------------ process group
def launched_with_torchrun() -> bool:
    """Whether this process was started as one rank of a job (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA (one GPU per rank), else `device`."""
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_process_group(
    *, timeout_s: float = DEFAULT_TIMEOUT_S, device: str | torch.device = "cpu"
) -> Communicator:
    """Join the job's default process group (unless one exists) and return its communicator.

    Reads the rendezvous from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); NCCL when `device` is CUDA (pinned to ``LOCAL_RANK``),
    Gloo otherwise. `timeout_s` bounds every collective, and the start-up rendezvous.
    """
    global _timeout_s
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    device = torch.device(device)
    if not dist.is_initialized():
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise DistributedError(
                f"no process group to join: {', '.join(missing)} not set. Launch one process per "
                "rank with `torchrun --nproc_per_node=N ...`, which sets them"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_device(device))
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as err:
            raise DistributedError(
                f"could not form the process group of {os.environ['WORLD_SIZE']} ranks at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:g} s: "
                f"{_first_line(err)}. Check that every rank was started and can reach rank 0"
            ) from err
        _timeout_s = float(timeout_s)
    return Communicator()


def shutdown() -> None:
    """Leave the default process group (call once a job's last collective is done)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class Communicator:
    """The collectives distributed ALS uses, on one process group, with clear failures.

    Every operation raises :class:`DistributedError` (naming the operation, the seconds waited
    and the likely cause) when the backend reports a dead peer or a timeout. `group` is the
    process group (None: the default one); `timeout_s` its timeout, for those messages (default:
    the one :func:`init_process_group` used).
    """

    def __init__(self, group: Any = None, *, timeout_s: float | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError(
                "distributed ALS needs an initialised torch.distributed process group: call "
                "recsys.als.distributed.init_process_group() in every rank (under torchrun)"
            )
        self.group = group
        self.timeout_s = _timeout_s if timeout_s is None else float(timeout_s)
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        self.device = (
            torch.device("cuda", torch.cuda.current_device())
            if self.backend == "nccl"
            else torch.device("cpu")
        )

    def _global(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def _run(self, what: str, op: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return op()
        except RuntimeError as err:  # DistBackendError, Gloo's and NCCL's errors
            waited = time.monotonic() - start
            timeout = f"{self.timeout_s:g} s" if self.timeout_s else "the group's timeout"
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {what} failed after {waited:.1f} s "
                f"({_first_line(err)}). Likely cause: another rank died (killed, out of memory, "
                f"or an error: see its log) or stopped answering for longer than the timeout "
                f"({timeout}; als.distributed_timeout_s). Restart the job; with "
                "run_dir=<run folder> it resumes from the last checkpoint"
            ) from err

    def all_reduce_sum(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place; returns it."""
        if self.world_size > 1:
            self._run(what, lambda: dist.all_reduce(tensor, group=self.group))
        return tensor

    def any(self, flag: bool, what: str) -> bool:
        """Whether `flag` is true on any rank."""
        value = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
        if self.world_size > 1:
            op = dist.ReduceOp.MAX
            self._run(what, lambda: dist.all_reduce(value, op=op, group=self.group))
        return bool(value.item())

    def broadcast(self, tensor: torch.Tensor, what: str, src: int = 0) -> torch.Tensor:
        """`tensor` as rank `src` has it, on every rank (in place)."""
        if self.world_size > 1:
            source = self._global(src)
            self._run(what, lambda: dist.broadcast(tensor, source, group=self.group))
        return tensor

    def broadcast_float(self, value: float, what: str, src: int = 0) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.broadcast(t, what, src).item())

    def broadcast_text(self, text: str, what: str, src: int = 0) -> str:
        """Rank `src`'s string on every rank (UTF-8 bytes; no pickle)."""
        data = text.encode() if self.rank == src else b""
        size = int(self.broadcast_float(float(len(data)), what, src))
        if size == 0:
            return ""
        buf = torch.zeros(size, dtype=torch.uint8, device=self.device)
        if self.rank == src:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return bytes(self.broadcast(buf, what, src).cpu().numpy()).decode()

    def all_gather_values(self, values: Sequence[float], what: str) -> np.ndarray:
        """(world_size, len(values)) float64: every rank's `values`, row r from rank r."""
        local = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        out = local.new_empty((self.world_size, local.numel()))
        if self.world_size == 1:
            out[0] = local
        else:
            parts = list(out.unbind(0))
            self._run(what, lambda: dist.all_gather(parts, local, group=self.group))
        return out.cpu().numpy()

    def all_gather_rows(self, local: torch.Tensor, partition: Partition, what: str) -> torch.Tensor:
        """The full table whose rows ``partition.range(r)`` come from rank r's `local`."""
        lo, hi = partition.range(self.rank)
        if local.shape[0] != hi - lo:
            raise ValueError(f"{what}: rank {self.rank} holds {local.shape[0]} rows, not {hi - lo}")
        full = local.new_empty((partition.total, *local.shape[1:]))
        parts = [full[a:b] for a, b in partition.ranges()]
        if self.world_size == 1:
            full.copy_(local)
        elif len(set(partition.sizes)) == 1:
            self._run(what, lambda: dist.all_gather(parts, local.contiguous(), group=self.group))
        else:  # uneven slices (Gloo's all_gather needs equal ones): one broadcast per rank

            def broadcasts() -> None:
                parts[self.rank].copy_(local)
                for r, part in enumerate(parts):
                    if part.numel():
                        dist.broadcast(part, self._global(r), group=self.group)

            self._run(what, broadcasts)
        return full


# ------------------------------------------------------------------------------ training
def _checksum(values: Any) -> float:
    """An exact, order-independent checksum of an array's bits (sum of its 32-bit words)."""
    t = torch.as_tensor(values).detach().contiguous().flatten()
    words = t.view(torch.int32) if t.numel() and t.element_size() % 4 == 0 else t.to(torch.int64)
    return float(int(words.to(torch.int64).sum()) % 2**52)


def _fingerprint(model: FactorModel, matrix: sp.csr_matrix) -> list[float]:
    """Numbers every rank must agree on before training: the input and the starting model."""
    biases = [b for b in (model.user_bias, model.item_bias) if b is not None]
    return [
        float(matrix.shape[0]),
        float(matrix.shape[1]),
        float(matrix.nnz),
        _checksum(matrix.data),
        _checksum(matrix.indices),
        float(len(model.history)),
        _checksum(model.user_factors) + _checksum(model.item_factors),
        sum(_checksum(b) for b in biases),
        model.global_bias,
    ]


_FINGERPRINT_NAMES = (
    "users", "items", "interactions", "values", "item indices",
    "epochs done", "factors", "biases", "global bias",
)  # fmt: skip


def check_agreement(comm: Communicator, model: FactorModel, matrix: sp.csr_matrix) -> None:
    seen = comm.all_gather_values(_fingerprint(model, matrix), "the start-up consistency check")
    differ = [
        name
        for name, column in zip(_FINGERPRINT_NAMES, seen.T, strict=True)
        if not np.array_equal(column, np.full_like(column, column[0]), equal_nan=True)
    ]
    if differ:
        raise ValueError(
            f"the ranks were given different data or models ({', '.join(differ)} differ: "
            f"{seen.T[_FINGERPRINT_NAMES.index(differ[0])].tolist()} by rank). Every rank must "
            "call fit with the same user_items, model settings and seed (and resume from the "
            "same checkpoint)"
        )


_OTHER = {"users": "items", "items": "users"}
_NAMES = {"users": "user", "items": "item"}


@dataclass
class Slice:
    """This rank's rows of one side: factors and biases (None without biases)."""

    factors: torch.Tensor
    bias: torch.Tensor | None

    @classmethod
    def of(cls, factors: torch.Tensor, bias: torch.Tensor | None, lo: int, hi: int) -> Slice:
        """A copy of rows lo:hi (a copy, so the full table can be freed)."""
        return cls(factors[lo:hi].clone(), None if bias is None else bias[lo:hi].clone())

    def gather(self, comm: Communicator, partition: Partition, side: str) -> Slice:
        """The full side, every rank's slice in place (all-gather)."""
        factors = comm.all_gather_rows(self.factors, partition, f"all-gather of {side} factors")
        bias = (
            None
            if self.bias is None
            else comm.all_gather_rows(self.bias, partition, f"all-gather of {side} biases")
        )
        return Slice(factors, bias)

    def pair(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.factors, self.bias


class ShardedStrategy(Strategy):
    """The hooks of :func:`recsys.als.training.train` for one rank (see the module doc).

    The rank solves its user and item ranges; the fixed side is all-gathered for its half-epoch
    and dropped after it, the Gram matrix is the all-reduced sum of every rank's slice Gram, and
    the loss's partial sums are all-reduced.
    """

    def __init__(self, model: FactorModel, matrix: sp.csr_matrix, comm: Communicator) -> None:
        self.model, self.comm = model, comm
        self.equations = model.equations()
        self.workspace = Workspace()
        self.parts = dict(zip(SIDES, shard_plan(matrix, comm.world_size), strict=True))
        (u0, u1), (i0, i1) = (self.parts[side].range(comm.rank) for side in SIDES)
        item_rows = matrix[:, i0:i1].T.tocsr()
        self.rows = {
            "users": self.equations.rows(matrix[u0:u1]),
            "items": self.equations.rows(item_rows),
        }
        self.observed = (
            Observed.from_csr(item_rows, model.device, model.dtype)
            if model.calculate_loss
            else None
        )
        del item_rows
        # this rank's slices; the full tables exist only during a half-epoch (the fixed side)
        # and for the callback
        self.slices = {
            "users": Slice.of(model.user_factors, model.user_bias, u0, u1),
            "items": Slice.of(model.item_factors, model.item_bias, i0, i1),
        }
        #: the gathered full sides; the first user half uses the model's item table as it is
        self.full: dict[str, Slice | None] = {
            "users": None,
            "items": Slice(model.item_factors, model.item_bias),
        }
        publish(model, None, None)

    def _gather(self, side: str) -> Slice:
        return self.slices[side].gather(self.comm, self.parts[side], _NAMES[side])

    def current(self, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.slices[side].pair()

    def fixed(self, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        other = _OTHER[side]
        if self.full[other] is None:
            self.full[other] = self._gather(other)
        return self.full[other].pair()

    def gram(self, side: str) -> torch.Tensor:
        local, _ = self.equations.fixed_side(*self.slices[_OTHER[side]].pair())
        what = f"all-reduce of the {_NAMES[_OTHER[side]]} Gram matrix"
        return self.comm.all_reduce_sum(local.T @ local, what)

    def exchange(self, side: str, factors: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.slices[side] = Slice(factors.clone(), None if bias is None else bias.clone())
        self.full[side] = None  # stale now
        if side == "users":  # free the fixed side before gathering the other; after the item
            self.full["items"] = None  # half, the users stay for the loss and the callback

    def any(self, flag: bool, what: str) -> bool:
        return self.comm.any(flag, what)

    def reduce(self, sums: torch.Tensor, what: str) -> torch.Tensor:
        return self.comm.all_reduce_sum(sums, what)

    def loss_parts(self) -> torch.Tensor:
        """Every term is a sum over rows: the observed terms over this rank's items (`observed`
        holds their entries, item x user, scored against all users), the regularization and the
        Gram matrices over its user and item slices."""
        users, items = self.slices["users"], self.slices["items"]
        return loss_sums(
            self.observed,
            (items.pair(), self.fixed("items")),
            Side(*users.pair(), self.rows["users"].reg),
            Side(*items.pair(), self.rows["items"].reg),
            self.equations.global_bias,
            self.equations.weighting,
            self.equations.bias_reg_ratio,
        )

    def end_epoch(self, callback: Callback | None, epoch: int, loss: float, seconds: float) -> bool:
        """The callback runs on every rank with the full factors (gathered for it); rank 0's
        return value decides for all whether to stop."""
        stop = False
        if callback is not None:
            self.full["items"] = self._gather("items")  # the next user half reuses it
            publish(self.model, self.fixed("items"), self.full["items"].pair())
            stop = bool(callback(epoch, loss, seconds, self.model))
            publish(self.model, None, None)
        self.full["users"] = None
        return self.comm.broadcast_float(float(stop), "broadcast of rank 0's stop decision") != 0.0

    def finish(self) -> None:
        # the interaction structures go before the full tables come
        self.rows = {}
        self.observed = None
        self.model.solver.release()
        publish(self.model, self._gather("users").pair(), self.fixed("users"))


def train_sharded(
    model: FactorModel,
    matrix: sp.csr_matrix,
    callback: Callback | None = None,
    comm: Communicator | None = None,
) -> FactorModel:
    """The epochs of ``ALS.fit(..., distributed=...)`` on this rank's shard (see the module doc).

    `model` must already be initialised (or resumed) identically on every rank, as `ALS.fit` does
    before calling this; `matrix` is the canonical CSR every rank was given. Between exchanges a
    rank keeps only its slices of the factors; the callback runs on every rank with the full
    factors after each epoch (gathered for it); rank 0's return value decides for all whether to
    stop. Returns `model`, holding the full factors on every rank.
    """
    comm = comm or Communicator()
    check_agreement(comm, model, matrix)
    train(ShardedStrategy(model, matrix, comm), callback)
    return model


def publish(
    model: FactorModel,
    users: tuple[torch.Tensor, torch.Tensor | None] | None,
    items: tuple[torch.Tensor, torch.Tensor | None] | None,
) -> None:
    """Set (or, with None, clear) the model's full factor tables."""
    model.user_factors, model.user_bias = (None, None) if users is None else users
    model.item_factors, model.item_bias = (None, None) if items is None else items
