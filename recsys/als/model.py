"""ALS: alternating least squares with biases, exact batched solves, on CUDA or the CPU."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als.batching import build_buckets
from recsys.als.loss import Observed, Side, als_loss
from recsys.als.posterior import draw_normal_wishart
from recsys.als.solvers import SOLVERS, HalfProblem
from recsys.als.solvers.base import Workspace
from recsys.als.weightings import WEIGHTINGS
from recsys.io import atomic_path
from recsys.scoring import topk_items

#: version of the file layout written by `ALS.save`; `load` rejects any other
FORMAT_VERSION = 1

#: callback(epoch, loss, seconds, model) -> truthy to stop training early
Callback = Callable[[int, float, float, "ALS"], Any]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


_DIVERGENCE_HINT = (
    "Likely causes: regularization too small for the data (try a larger value), alpha too "
    "large, extreme initial values, or float32 overflow (try dtype='float64')."
)


class DivergenceError(FloatingPointError):
    """Training produced NaN or infinite factors or loss."""


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else the CPU; anything else as given (validated)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use 'auto'")
    return resolved


def _as_csr(user_items: Any, name: str = "user_items") -> tuple[sp.csr_matrix, Any]:
    """The CSR matrix of `user_items` (a scipy CSR or a recsys Interactions) and the source."""
    matrix = getattr(user_items, "matrix", user_items)
    if not sp.issparse(matrix) or matrix.format != "csr":
        kind = type(matrix).__name__ if not sp.issparse(matrix) else f"sparse {matrix.format}"
        raise TypeError(
            f"{name} must be a scipy.sparse CSR matrix (users x items) or recsys Interactions, "
            f"got {kind}; convert with scipy.sparse.csr_matrix(...) or .tocsr()"
        )
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix, user_items


def _ids_to_array(ids: Any) -> np.ndarray | None:
    """External ids as a numpy array that `np.savez` can store without pickle."""
    if ids is None:
        return None
    arr = np.asarray(ids)
    return arr if arr.dtype.kind in "iuf" else arr.astype(str)


class ALS:
    """Matrix factorisation by alternating least squares for implicit or explicit feedback.

    Scores are ``s(u, i) = x_u . y_i + b_u + b_i + mu`` (biases only with ``use_bias``; ``mu`` is
    the global mean for explicit ratings, else 0). Each half-epoch solves every row's normal
    equations exactly (``solver="cholesky"``) or approximately (``solver="cg"``); the weighting
    (``"hkv"``, ``"ials"``, ``"explicit"``) says how raw values become weights and targets.

    Args:
        n_factors: embedding dimension f.
        regularization: lambda, scaled per row by ``(n_u + a * N) ** reg_exponent``.
        bias_regularization: lambda for the biases (defaults to ``regularization``).
        iterations: epochs (one user and one item half-epoch each).
        weighting: registry name of the weighting (see ``recsys.als.weightings``).
        alpha: confidence slope of ``hkv``.
        alpha0: unobserved weight of ``ials``.
        reg_exponent: nu; default per weighting (0 for hkv, 1 for ials and explicit ALS-WR).
        use_bias: learn user and item biases (f + 1 unknowns per solve).
        solver: registry name of the solver (see ``recsys.als.solvers``).
        cg_steps: conjugate-gradient steps per half-epoch for ``solver="cg"``.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        dtype: "float32" or "float64".
        seed: seeds the initialisation; same seed and device give identical factors.
        memory_budget_mb: bound on the solver's working memory per batch of rows.
        init_std: standard deviation of the initial factors (default 0.1 / sqrt(f)).
        calculate_loss: compute the exact loss after every epoch (history, callback). Costs one
            pass over the nonzeros; turn off when only speed matters (the loss is then NaN).
    """

    #: the trained tensors (biases None without `use_bias`)
    TENSORS: ClassVar[tuple[str, ...]] = ("user_factors", "item_factors", "user_bias", "item_bias")

    def __init__(
        self,
        n_factors: int = 64,
        regularization: float = 0.01,
        *,
        bias_regularization: float | None = None,
        iterations: int = 15,
        weighting: str = "hkv",
        alpha: float = 1.0,
        alpha0: float = 0.01,
        reg_exponent: float | None = None,
        use_bias: bool = True,
        solver: str = "cholesky",
        cg_steps: int = 3,
        device: str = "auto",
        dtype: str = "float32",
        seed: int = 0,
        memory_budget_mb: float = 1024.0,
        init_std: float | None = None,
        calculate_loss: bool = True,
    ) -> None:
        if isinstance(n_factors, bool) or not isinstance(n_factors, int | np.integer):
            raise ValueError(f"n_factors must be an integer >= 1, got {n_factors!r}")
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if not regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {regularization}")
        if bias_regularization is not None and not bias_regularization >= 0:
            raise ValueError(f"bias_regularization must be >= 0, got {bias_regularization}")
        if use_bias and not (
            regularization > 0 and (bias_regularization is None or bias_regularization > 0)
        ):
            raise ValueError(
                "use_bias=True needs regularization > 0 and bias_regularization > 0 so every "
                "solve is well posed; raise them or set use_bias=False"
            )
        if int(iterations) < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if not memory_budget_mb > 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        self.params: dict[str, Any] = {
            "n_factors": int(n_factors),
            "regularization": float(regularization),
            "bias_regularization": float(
                regularization if bias_regularization is None else bias_regularization
            ),
            "iterations": int(iterations),
            "weighting": weighting,
            "alpha": float(alpha),
            "alpha0": float(alpha0),
            "reg_exponent": None if reg_exponent is None else float(reg_exponent),
            "use_bias": bool(use_bias),
            "solver": solver,
            "cg_steps": int(cg_steps),
            "dtype": dtype,
            "seed": int(seed),
            "memory_budget_mb": float(memory_budget_mb),
            "init_std": None if init_std is None else float(init_std),
            "calculate_loss": bool(calculate_loss),
        }
        self.weighting = WEIGHTINGS.build(weighting, alpha=alpha, alpha0=alpha0)
        self.solver = SOLVERS.build(solver, steps=cg_steps)
        self.device = resolve_device(device)
        self.dtype = _DTYPES[dtype]
        self.user_factors: torch.Tensor | None = None
        self.item_factors: torch.Tensor | None = None
        self.user_bias: torch.Tensor | None = None
        self.item_bias: torch.Tensor | None = None
        self.global_bias: float = 0.0
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        #: set by `sample_posterior`: {"samples": S, "burn_in": B, "seed": s}; the factors then
        #: hold S posterior draws side by side (S * f columns)
        self.posterior: dict[str, Any] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def n_factors(self) -> int:
        return self.params["n_factors"]

    @property
    def reg_exponent(self) -> float:
        nu = self.params["reg_exponent"]
        return self.weighting.default_reg_exponent if nu is None else nu

    @property
    def is_fitted(self) -> bool:
        return self.item_factors is not None

    @property
    def n_users(self) -> int:
        return 0 if self.user_factors is None else self.user_factors.shape[0]

    @property
    def n_items(self) -> int:
        return 0 if self.item_factors is None else self.item_factors.shape[0]

    @property
    def _bias_column(self) -> float:
        """Value c of the fixed side's bias column: c^2 = lambda / lambda_b keeps one lambda."""
        p = self.params
        return math.sqrt(p["regularization"] / p["bias_regularization"])

    # ------------------------------------------------------------------ training
    def fit(
        self,
        user_items: Any,
        callback: Callback | None = None,
        *,
        resume: bool = False,
        distributed: Any = False,
    ) -> ALS:
        """Train on `user_items` (users x items CSR or Interactions) for `iterations` epochs.

        `callback(epoch, loss, seconds, model)` runs after every epoch; a truthy return stops
        training. With `resume=True` a model that already has factors for this matrix (e.g. from
        a checkpoint written by `save`) continues from epoch `len(history)` instead of
        re-initialising, and ends with the same factors as an uninterrupted run.
        With `distributed=True` (or a `recsys.als.distributed.Communicator`) every rank of the
        initialised `torch.distributed` process group calls `fit` with the same `user_items`,
        solves only its shard of the users and items, and ends with the same full factors.
        """
        matrix, source = _as_csr(user_items)
        values = torch.from_numpy(matrix.data)
        self.weighting.check_values(values)
        if resume and self.posterior is not None:
            self._require_single("resume training")
        if not (resume and self.is_fitted):
            self._initialise(matrix.shape)
            self.history = []
            self.posterior = None
            self.global_bias = (
                float(matrix.data.mean()) if self.weighting.uses_global_mean and matrix.nnz else 0.0
            )
        elif (self.n_users, self.n_items) != matrix.shape:
            raise ValueError(
                f"cannot resume: the model has {self.n_users} users x {self.n_items} items but "
                f"user_items is {matrix.shape[0]} x {matrix.shape[1]}"
            )
        else:  # training writes the factors in place: never into tensors shared with others
            for name in self.TENSORS:
                value = getattr(self, name)
                if value is not None:
                    setattr(self, name, value.clone(memory_format=torch.contiguous_format))
        self.user_ids = _ids_to_array(getattr(source, "user_ids", self.user_ids))
        self.item_ids = _ids_to_array(getattr(source, "item_ids", self.item_ids))
        if distributed:
            from recsys.als.distributed import train_sharded

            comm = None if distributed is True else distributed
            return train_sharded(self, matrix, callback, comm)

        users = self._structure(matrix)
        items = self._structure(matrix.T.tocsr())
        observed = Observed.from_csr(matrix, self.device, self.dtype)
        with self.solver.scratch():
            self._train_epochs(users, items, observed, callback)
        return self

    def _train_epochs(
        self,
        users: dict[str, Any],
        items: dict[str, Any],
        observed: Observed,
        callback: Callback | None,
    ) -> None:
        """Alternate the half-epochs until `iterations` or until the callback says stop.

        The factor tensors are updated in place every epoch (as `implicit` does): a callback
        that keeps an epoch's factors must copy them.
        """
        workspace = Workspace()
        for epoch in range(len(self.history), self.params["iterations"]):
            start = time.perf_counter()
            try:
                self._update_users(users, workspace)
                self._update_items(items, workspace)
            except (torch.linalg.LinAlgError, FloatingPointError) as err:
                raise DivergenceError(
                    f"training diverged at epoch {epoch + 1}: {err} {_DIVERGENCE_HINT}"
                ) from err
            self._synchronize()
            seconds = time.perf_counter() - start
            if self.params["calculate_loss"]:
                loss = self._loss(observed, users["reg"], items["reg"])
            else:
                loss = dict.fromkeys(("loss", "observed", "unobserved", "regularization"), math.nan)
            self._check_finite(epoch, loss["loss"])
            self.history.append({"epoch": epoch + 1, **loss, "seconds": seconds})
            if callback is not None and callback(epoch + 1, loss["loss"], seconds, self):
                break

    def sample_posterior(
        self,
        user_items: Any,
        samples: int = 50,
        *,
        burn_in: int = 5,
        seed: int | None = None,
        prior: str = "learned",
    ) -> ALS:
        """Average `samples` Gibbs draws from the posterior around the fitted model (BPMF).

        Bayesian matrix factorisation (Salakhutdinov & Mnih 2008): a Gaussian likelihood of
        precision tau on the weighted squared error and Gaussian priors on the vectors. Each
        sweep draws tau from its Gamma conditional given the residuals (flat prior), with
        ``prior="learned"`` each side's prior N(mu, Lambda^-1) from its Normal-Wishart
        conditional (``recsys.als.posterior``; the model's regularization then plays no part),
        and then every user and every item from its Gaussian conditional N(mean, A_u^-1 / tau);
        ``prior="fixed"`` keeps the model's own regularization as the prior instead. The exact
        solver draws the vectors by perturbing the right-hand side (perturb-and-MAP), so a sweep
        costs about one epoch. Averaging predictions over draws integrates out the uncertainty
        that a single point estimate ignores, which lowers held-out error (rating prediction
        especially).

        The average of S factor models is itself one: the draws side by side, each scaled by
        1/sqrt(S), and the mean biases. So afterwards `user_factors` / `item_factors` have
        S * f columns and every scoring API, the embeddings and the Faiss export work as
        before; solves against the averaged model (resuming `fit`, `fold_in`, partial fits)
        are refused. `fit` from scratch starts over.

        Args:
            user_items: the training matrix `fit` used (same shape).
            samples: draws to average (S).
            burn_in: sweeps discarded first, while the chain leaves the point estimate.
            seed: seeds the draws (default: the model's seed).
            prior: "learned" (Normal-Wishart hyperprior per side) or "fixed".
        """
        self._require_fitted()
        self._require_single("sample the posterior again")
        if not isinstance(samples, int | np.integer) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        if not isinstance(burn_in, int | np.integer) or burn_in < 0:
            raise ValueError(f"burn_in must be an integer >= 0, got {burn_in!r}")
        if self.params["solver"] != "cholesky":
            raise ValueError(
                "sample_posterior needs exact solves: build the model with solver='cholesky'"
            )
        if prior not in ("learned", "fixed"):
            raise ValueError(f"prior must be 'learned' or 'fixed', got {prior!r}")
        matrix, _ = _as_csr(user_items)
        if matrix.shape != (self.n_users, self.n_items):
            raise ValueError(
                f"user_items is {matrix.shape[0]} x {matrix.shape[1]} but the model was fitted "
                f"on {self.n_users} users x {self.n_items} items"
            )
        seed = self.params["seed"] if seed is None else int(seed)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        gamma = np.random.default_rng(seed)
        users = self._structure(matrix)
        items = self._structure(matrix.T.tocsr())
        observed = Observed.from_csr(matrix, self.device, self.dtype)
        # terms of the Gaussian likelihood: the observed entries, or every pair when a > 0
        n_terms = matrix.nnz if self.weighting.all_pairs_weight == 0 else math.prod(matrix.shape)
        learned = prior == "learned"
        # with a learned prior it replaces the per-row regularization in the solves
        solve_users = {**users, "reg": torch.zeros_like(users["reg"])} if learned else users
        solve_items = {**items, "reg": torch.zeros_like(items["reg"])} if learned else items
        draws: list[tuple[torch.Tensor, ...]] = []
        with self.solver.scratch():
            for sweep in range(burn_in + samples):
                start = time.perf_counter()
                loss = self._loss(observed, users["reg"], items["reg"])
                error = loss["observed"] + loss["unobserved"]  # the weighted squared error
                tau = float(gamma.gamma(n_terms / 2.0, 2.0 / max(error, 1e-30)))
                sigma = 1.0 / math.sqrt(tau)
                self.user_factors, self.user_bias = self._solve_side_copy(
                    solve_users, self.item_factors, self.item_bias,
                    self.user_factors, self.user_bias,
                    noise_scale=sigma, generator=generator,
                    prior=self._draw_prior(self.user_factors, self.user_bias, tau, gamma)
                    if learned else None,
                )  # fmt: skip
                self.item_factors, self.item_bias = self._solve_side_copy(
                    solve_items, self.user_factors, self.user_bias,
                    self.item_factors, self.item_bias,
                    noise_scale=sigma, generator=generator,
                    prior=self._draw_prior(self.item_factors, self.item_bias, tau, gamma)
                    if learned else None,
                )  # fmt: skip
                self._synchronize()
                self._check_finite(len(self.history), loss["loss"])
                if sweep >= burn_in:
                    draws.append(
                        (self.user_factors, self.item_factors, self.user_bias, self.item_bias)
                    )
                self.history.append({
                    "epoch": len(self.history) + 1, "phase": "posterior", **loss,
                    "noise_precision": tau, "seconds": time.perf_counter() - start,
                })  # fmt: skip
        scale = 1.0 / math.sqrt(samples)
        self.user_factors = torch.cat([d[0] for d in draws], dim=1) * scale
        self.item_factors = torch.cat([d[1] for d in draws], dim=1) * scale
        if self.user_bias is not None:
            self.user_bias = torch.stack([d[2] for d in draws]).mean(0)
            self.item_bias = torch.stack([d[3] for d in draws]).mean(0)
        self.posterior = {
            "samples": int(samples), "burn_in": int(burn_in), "seed": seed, "prior": prior,
        }  # fmt: skip
        return self

    def _draw_prior(
        self, factors: torch.Tensor, bias: torch.Tensor | None, tau: float, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A side's prior (P, mu) in solve coordinates [x, b / c], P = Lambda / tau (the solves
        are scaled by the noise precision tau)."""
        coords = (
            factors
            if bias is None
            else torch.cat([factors, (bias / self._bias_column)[:, None]], 1)
        )
        mu, precision = draw_normal_wishart(coords.double().cpu().numpy(), rng)
        to = lambda a: torch.from_numpy(a).to(self.device, self.dtype)  # noqa: E731
        return to(precision / tau), to(mu)

    def _require_single(self, action: str) -> None:
        """Refuse solves against a posterior average (its factors are S draws side by side)."""
        if self.posterior is not None:
            raise ValueError(
                f"cannot {action}: this model averages {self.posterior['samples']} posterior "
                "draws (sample_posterior), not one factor model; do it before sample_posterior, "
                "or fit again from scratch"
            )

    def _initialise(self, shape: tuple[int, int]) -> None:
        """Normal(0, init_std) factors from the seed (generated on the CPU: same on any device)."""
        f = self.n_factors
        std = self.params["init_std"] or self.weighting.init_std(f)
        rng = np.random.default_rng(self.params["seed"])

        def draw(n: int) -> torch.Tensor:
            values = rng.standard_normal((n, f), dtype=np.float32)
            values *= np.float32(std)  # in place: a second table of fresh memory costs more
            return torch.from_numpy(values).to(self.device, self.dtype)

        self.user_factors, self.item_factors = draw(shape[0]), draw(shape[1])
        if self.params["use_bias"]:
            self.user_bias = torch.zeros(shape[0], device=self.device, dtype=self.dtype)
            self.item_bias = torch.zeros(shape[1], device=self.device, dtype=self.dtype)
        else:
            self.user_bias = self.item_bias = None

    def _structure(self, matrix: sp.csr_matrix) -> dict[str, Any]:
        """Buckets, empty rows and per-row regularization of one side (fixed during a fit)."""
        buckets, empty = build_buckets(matrix, self.weighting, self.device, self.dtype)
        counts = torch.from_numpy(np.diff(matrix.indptr).astype(np.float64))
        n_cols = matrix.shape[1]
        scale = (counts + self.weighting.all_pairs_weight * n_cols) ** self.reg_exponent
        reg = (self.params["regularization"] * scale).to(self.device, self.dtype)
        return {"buckets": buckets, "empty": empty, "reg": reg}

    def _fixed_side(
        self, factors: torch.Tensor, bias: torch.Tensor | None, workspace: Workspace | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fixed side F (with the bias column c when biases are on) and its score offsets;
        F is built in `workspace` when given (reused every half-epoch of a fit)."""
        if bias is None:
            offsets = (
                None if self.global_bias == 0 else torch.full_like(factors[:, 0], self.global_bias)
            )
            return factors, offsets
        return self._with_column(factors, self._bias_column, "fixed", workspace), (
            bias + self.global_bias
        )

    @staticmethod
    def _with_column(
        factors: torch.Tensor, column: float | torch.Tensor, name: str, workspace: Workspace | None
    ) -> torch.Tensor:
        """[factors, column] (n, f + 1), in `workspace` buffer `name` when given."""
        shape = (factors.shape[0], factors.shape[1] + 1)
        out = (
            factors.new_empty(shape) if workspace is None else workspace.take(name, shape, factors)
        )
        out[:, :-1] = factors
        out[:, -1] = column
        return out

    def _solve_side(
        self,
        structure: dict[str, Any],
        fixed_factors: torch.Tensor,
        fixed_bias: torch.Tensor | None,
        current_factors: torch.Tensor,
        current_bias: torch.Tensor | None,
        noise_scale: float = 0.0,
        generator: torch.Generator | None = None,
        gram: torch.Tensor | None = None,
        prior: tuple[torch.Tensor, torch.Tensor] | None = None,
        workspace: Workspace | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Solve every row of one side against the other side; return factors and biases.

        They are views of the solver's scratch, valid until its next solve: callers copy them
        (a fit into its own factor tensors, in place). `workspace` holds the stacked inputs
        across the half-epochs of a fit.

        With `noise_scale` sigma > 0 each row is drawn from its conditional posterior
        N(solution, sigma^2 A_u^-1) instead (see `sample_posterior`). `gram` is the fixed
        side's F^T F when the caller has it already (summed across ranks in distributed fits).
        `prior` = (P, mu) adds a Gaussian prior N(mu, P^-1) shared by all rows (in the solve's
        coordinates [x, b / c]).
        """
        fixed, offsets = self._fixed_side(fixed_factors, fixed_bias, workspace)
        problem = HalfProblem(
            fixed=fixed,
            all_pairs_weight=self.weighting.all_pairs_weight,
            offsets=offsets,
            row_reg=structure["reg"],
            weighting=self.weighting,
            buckets=structure["buckets"],
            memory_budget_bytes=int(self.params["memory_budget_mb"] * 2**20),
            noise_scale=noise_scale,
            generator=generator,
            gram=gram,
            prior_precision=None if prior is None else prior[0],
            prior_mean=None if prior is None else prior[1],
        )
        c = self._bias_column if current_bias is not None else 1.0
        current = None
        if self.solver.warm_start:
            current = (
                current_factors
                if current_bias is None
                else self._with_column(current_factors, current_bias / c, "current", workspace)
            )
        solved = self.solver.solve(problem, current)
        solved[structure["empty"]] = 0
        f = self.n_factors
        return solved[:, :f], (None if current_bias is None else solved[:, f].mul_(c))

    def _solve_side_copy(
        self, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_solve_side` with the result copied out of the solver's scratch."""
        factors, bias = self._solve_side(*args, **kwargs)
        return factors.clone(), None if bias is None else bias.clone()

    def _solve_into(
        self,
        structure: dict[str, Any],
        fixed_factors: torch.Tensor,
        fixed_bias: torch.Tensor | None,
        factors: torch.Tensor,
        bias: torch.Tensor | None,
        workspace: Workspace | None,
    ) -> None:
        """Solve one side and copy the result (in the solver's scratch) into that side's own
        tensors, in place: no fresh memory per epoch."""
        new_factors, new_bias = self._solve_side(
            structure, fixed_factors, fixed_bias, factors, bias, workspace=workspace
        )
        factors.copy_(new_factors)
        if bias is not None:
            bias.copy_(new_bias)

    def _update_users(self, users: dict[str, Any], workspace: Workspace | None = None) -> None:
        self._solve_into(
            users, self.item_factors, self.item_bias, self.user_factors, self.user_bias, workspace
        )

    def _update_items(self, items: dict[str, Any], workspace: Workspace | None = None) -> None:
        self._solve_into(
            items, self.user_factors, self.user_bias, self.item_factors, self.item_bias, workspace
        )

    def _loss(
        self, observed: Observed, user_reg: torch.Tensor, item_reg: torch.Tensor
    ) -> dict[str, float]:
        p = self.params
        return als_loss(
            observed,
            users=Side(self.user_factors, self.user_bias, user_reg),
            items=Side(self.item_factors, self.item_bias, item_reg),
            global_bias=self.global_bias,
            weighting=self.weighting,
            bias_reg_ratio=p["bias_regularization"] / p["regularization"]
            if p["regularization"]
            else 0.0,
        )

    def _check_finite(self, epoch: int, loss: float) -> None:
        tensors = [getattr(self, name) for name in self.TENSORS]
        # a float64 sum is finite iff every entry is (float32 entries cannot overflow it), and
        # it needs no temporary as large as the tensor, unlike isfinite(t).all()
        finite = (math.isfinite(loss) or not self.params["calculate_loss"]) and all(
            math.isfinite(float(t.sum(dtype=torch.float64))) for t in tensors if t is not None
        )
        if not finite:
            raise DivergenceError(
                f"training diverged at epoch {epoch + 1}: NaN or infinite factors or loss. "
                + _DIVERGENCE_HINT
            )

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("the model is not fitted yet: call fit() or ALS.load() first")

    def _index_tensor(self, ids: Any, n: int, what: str) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1), device=self.device)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(
                f"{what} ids must be internal indices in [0, {n}); got out-of-range ids"
            )
        return idx

    def user_embeddings(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Query vectors q_u (float32): score(u, i) = q_u . item_embeddings()[i] + user_offsets."""
        self._require_fitted()
        idx = self._index_tensor(user_ids, self.n_users, "user")
        x = self.user_factors[idx]
        if self.user_bias is not None:
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return x.float().cpu().numpy()

    def item_embeddings(self) -> np.ndarray:
        """Item vectors (float32, n_items x d), the item bias folded in as the last dimension."""
        self._require_fitted()
        y = self.item_factors
        if self.item_bias is not None:
            y = torch.cat([y, self.item_bias[:, None]], dim=1)
        return y.float().cpu().numpy()

    def user_offsets(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-user constant of every score: the user bias plus the global mean."""
        self._require_fitted()
        idx = self._index_tensor(user_ids, self.n_users, "user")
        offset = torch.full((idx.numel(),), self.global_bias, dtype=torch.float64)
        if self.user_bias is not None:
            offset = offset + self.user_bias[idx].double().cpu()
        return offset.float().numpy()

    def predict(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Scores of the (user, item) pairs given elementwise (e.g. predicted ratings)."""
        self._require_fitted()
        u = self._index_tensor(user_ids, self.n_users, "user")
        i = self._index_tensor(item_ids, self.n_items, "item")
        if u.shape != i.shape:
            raise ValueError(
                f"user_ids and item_ids must have the same length, got {len(u)} and {len(i)}"
            )
        s = (self.user_factors[u] * self.item_factors[i]).sum(1) + self.global_bias
        if self.user_bias is not None:
            s = s + self.user_bias[u] + self.item_bias[i]
        return s.float().cpu().numpy()

    def recommend(
        self,
        user_ids: Any,
        user_items: sp.csr_matrix | None = None,
        k: int = 10,
        filter_seen: bool = True,
        filter_items: Any = None,
        items: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per user by exact score over the whole catalog (or `items`).

        `user_items` holds one row per entry of `user_ids` (their interactions, as in `implicit`);
        with `filter_seen` those items are excluded. `filter_items` are excluded for everyone,
        `items` restricts the candidates. Returns internal item ids (int64) and scores (float32),
        both (len(user_ids), k); slots beyond the number of eligible items hold id -1, score -inf.
        """
        self._require_fitted()
        users = self._index_tensor(user_ids, self.n_users, "user")
        exclude = None
        if filter_seen:
            if user_items is None:
                raise ValueError("filter_seen=True needs user_items (one row per user id)")
            exclude, _ = _as_csr(user_items)
            if exclude.shape != (users.numel(), self.n_items):
                raise ValueError(
                    f"user_items must have one row per user id and one column per item: "
                    f"expected {(users.numel(), self.n_items)}, got {exclude.shape}"
                )
        allowed = np.ones(self.n_items, dtype=bool)
        if items is not None:
            allowed[:] = False
            allowed[self._index_tensor(items, self.n_items, "item").cpu().numpy()] = True
        if filter_items is not None:
            allowed[self._index_tensor(filter_items, self.n_items, "item").cpu().numpy()] = False
        q = torch.from_numpy(self.user_embeddings(users.cpu().numpy())).to(self.device)
        e = torch.from_numpy(self.item_embeddings()).to(self.device)
        ids, scores = topk_items(
            q,
            e,
            k,
            exclude=exclude,
            user_offsets=torch.from_numpy(self.user_offsets(users.cpu().numpy())).to(self.device),
            allowed_items=None if allowed.all() else torch.from_numpy(allowed).to(self.device),
        )
        return ids.cpu().numpy().astype(np.int64), scores.float().cpu().numpy()

    def similar_items(self, item_ids: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k most cosine-similar items to each of `item_ids` (itself excluded)."""
        self._require_fitted()
        idx = self._index_tensor(item_ids, self.n_items, "item")
        unit = torch.nn.functional.normalize(self.item_factors.float(), dim=1)
        itself = sp.csr_matrix(
            (np.ones(idx.numel(), np.float32), (np.arange(idx.numel()), idx.cpu().numpy())),
            shape=(idx.numel(), self.n_items),
        )
        ids, scores = topk_items(unit[idx], unit, k, exclude=itself)
        return ids.cpu().numpy().astype(np.int64), scores.float().cpu().numpy()

    # ------------------------------------------------------------------ fold-in
    def fold_in_factors(self, user_items: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Factors (and biases) of users given by their rows, against the fixed item side.

        Each row is one exact solve of the same normal equations training uses, so a training
        user's row reproduces its trained vector (with the exact solver).
        """
        self._require_fitted()
        self._require_single("fold in users")
        rows, _ = _as_csr(user_items)
        if rows.shape[1] != self.n_items:
            raise ValueError(f"rows must have {self.n_items} columns (items), got {rows.shape[1]}")
        self.weighting.check_values(torch.from_numpy(rows.data))
        current_bias = (
            None
            if self.user_bias is None
            else torch.zeros(rows.shape[0], device=self.device, dtype=self.dtype)
        )
        current = torch.zeros(rows.shape[0], self.n_factors, device=self.device, dtype=self.dtype)
        with self.solver.scratch():
            return self._solve_side_copy(
                self._structure(rows), self.item_factors, self.item_bias, current, current_bias
            )

    def fold_in(self, user_items: Any) -> np.ndarray:
        """Query embeddings (as `user_embeddings`) for new or changed users given their rows."""
        factors, bias = self.fold_in_factors(user_items)
        if bias is not None:
            factors = torch.cat([factors, torch.ones_like(factors[:, :1])], dim=1)
        return factors.float().cpu().numpy()

    def partial_fit_users(self, user_ids: Any, user_items: Any) -> None:
        """Recompute (or add, for ids >= n_users) the given users from their rows."""
        factors, bias = self.fold_in_factors(user_items)
        self.user_factors, self.user_bias = self._scatter(
            self.user_factors, self.user_bias, user_ids, factors, bias
        )

    def partial_fit_items(self, item_ids: Any, item_users: Any) -> None:
        """Recompute (or add) the given items from their columns (rows: item x users CSR)."""
        self._require_fitted()
        self._require_single("refit items")
        cols, _ = _as_csr(item_users, "item_users")
        if cols.shape[1] != self.n_users:
            raise ValueError(
                f"item_users must have {self.n_users} columns (users), got {cols.shape[1]}"
            )
        self.weighting.check_values(torch.from_numpy(cols.data))
        zeros = torch.zeros(cols.shape[0], self.n_factors, device=self.device, dtype=self.dtype)
        bias0 = None if self.item_bias is None else zeros[:, 0].clone()
        with self.solver.scratch():
            factors, bias = self._solve_side_copy(
                self._structure(cols), self.user_factors, self.user_bias, zeros, bias0
            )
        self.item_factors, self.item_bias = self._scatter(
            self.item_factors, self.item_bias, item_ids, factors, bias
        )

    def _scatter(self, table, table_bias, ids, factors, bias):
        """Write rows into a factor table, growing it with zero rows for new ids."""
        idx = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1), device=self.device)
        if idx.numel() != factors.shape[0]:
            raise ValueError(f"got {idx.numel()} ids but {factors.shape[0]} rows")
        if idx.numel() and int(idx.min()) < 0:
            raise IndexError("ids must be >= 0")
        size = max(table.shape[0], int(idx.max()) + 1 if idx.numel() else 0)
        grown = table.new_zeros(size, table.shape[1])
        grown[: table.shape[0]] = table
        grown[idx] = factors
        if table_bias is None:
            return grown, None
        grown_bias = table_bias.new_zeros(size)
        grown_bias[: table_bias.shape[0]] = table_bias
        grown_bias[idx] = bias
        return grown, grown_bias

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write one self-describing `.npz` (no pickle) atomically; returns the path written."""
        self._require_fitted()
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "params": np.array(json.dumps(self.params)),
            "history": np.array(json.dumps(self.history)),
            "global_bias": np.array(self.global_bias),
            "user_factors": self.user_factors.cpu().numpy(),
            "item_factors": self.item_factors.cpu().numpy(),
        }
        if self.posterior is not None:
            arrays["posterior"] = np.array(json.dumps(self.posterior))
        for name in ("user_bias", "item_bias"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name).cpu().numpy()
        for name in ("user_ids", "item_ids"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> ALS:
        """Read a file written by `save` (never executes code from it) onto `device`."""
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"no model file at {path}") from None
        except (ValueError, OSError) as err:
            raise ValueError(f"{path} is not a recsys ALS model file (.npz): {err}") from None
        with data:
            missing = [
                k
                for k in (
                    "format_version",
                    "params",
                    "history",
                    "global_bias",
                    "user_factors",
                    "item_factors",
                )
                if k not in data.files
            ]
            if missing:
                raise ValueError(f"{path} is not a complete recsys ALS model: missing {missing}")
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{path} has model format version {version}; this recsys reads version "
                    f"{FORMAT_VERSION} (re-save it with a matching recsys version)"
                )
            params = json.loads(str(data["params"]))
            if params["use_bias"] and not {"user_bias", "item_bias"} <= set(data.files):
                raise ValueError(f"{path} says use_bias=True but holds no biases")
            model = cls(device=device, **params)
            to = lambda a: torch.from_numpy(np.array(a)).to(model.device, model.dtype)  # noqa: E731
            model.user_factors, model.item_factors = (
                to(data["user_factors"]),
                to(data["item_factors"]),
            )
            if params["use_bias"]:
                model.user_bias, model.item_bias = to(data["user_bias"]), to(data["item_bias"])
            model.global_bias = float(data["global_bias"])
            model.history = json.loads(str(data["history"]))
            if "posterior" in data.files:
                model.posterior = json.loads(str(data["posterior"]))
            model.user_ids = data["user_ids"] if "user_ids" in data.files else None
            model.item_ids = data["item_ids"] if "item_ids" in data.files else None
        return model
