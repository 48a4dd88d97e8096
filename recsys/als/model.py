"""ALS: alternating least squares with biases, exact batched solves, on CUDA or the CPU.

The model holds the parameters (factors, biases, id maps), scores, folds in new rows, and saves
and loads itself. Training is `recsys.als.training` (the epoch loop; sharded across processes
through `recsys.als.distributed`), posterior sampling `recsys.als.posterior`, and every row's
solve `recsys.als.equations`. The weighting and the solver are parts taken from their
registries; their hyperparameters are the parts' own (see `ALS`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys.als.equations import NormalEquations
from recsys.als.footprint import check_fit_memory
from recsys.als.inputs import (
    allowed_mask,
    as_csr,
    check_settings,
    checked_indices,
    ids_to_array,
    index_array,
    list_length,
)
from recsys.als.persistence import ModelFile, load_model, save_model
from recsys.als.posterior import sample_posterior
from recsys.als.ranking import as_results, cosine_neighbours, mask_tensor, queries
from recsys.als.solvers import SOLVERS, Solver
from recsys.als.solvers.cholesky import CholeskySolver
from recsys.als.training import Callback, LocalStrategy, train
from recsys.als.weightings import WEIGHTINGS, Weighting
from recsys.scoring import topk_items

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else the CPU; anything else as given (validated)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use 'auto'")
    return resolved


def part_parameters() -> dict[str, dataclasses.Field]:
    """The hyperparameters the registered weightings and solvers declare (ALS keyword arguments
    routed to the parts), by name."""
    return {**SOLVERS.parameters(), **WEIGHTINGS.parameters()}


class ALS:
    """Matrix factorisation by alternating least squares for implicit or explicit feedback.

    Scores are ``s(u, i) = x_u . y_i + b_u + b_i + mu`` (biases only with ``use_bias``; ``mu`` is
    the global mean for explicit ratings, else 0). Each half-epoch solves every row's normal
    equations with the solver (``"cholesky"`` exact, ``"cg"`` approximate); the weighting
    (``"hkv"``, ``"ials"``, ``"explicit"``) says how raw values become weights and targets.

    Args:
        n_factors: embedding dimension f.
        regularization: lambda, scaled per row by ``(n_u + a * N) ** reg_exponent``.
        bias_regularization: lambda for the biases (defaults to ``regularization``).
        iterations: epochs (one user and one item half-epoch each).
        weighting: a registry name (see ``recsys.als.weightings``) or a `Weighting` object.
        reg_exponent: nu; default per weighting (0 for hkv, 1 for ials and explicit ALS-WR).
        use_bias: learn user and item biases (f + 1 unknowns per solve). On by default: on
            held-out implicit data (ML-100K u1.base ratings >= 4 and the synthetic "small"
            preset, 20% per-user validation carves, three seeds, 64 factors, 15 epochs) biases
            raised recall@20 in 11 of 12 hkv / iALS runs (by 0.001-0.012; one lost 0.003).
        solver: a registry name (see ``recsys.als.solvers``) or a `Solver` object.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        dtype: "float32" or "float64".
        seed: seeds the initialisation; same seed and device give identical factors.
        memory_budget_mb: bound on the solver's working memory per batch of rows.
        init_std: standard deviation of the initial factors (default: the weighting's,
            0.1 / sqrt(f)).
        calculate_loss: compute the exact loss after every epoch (history, callback). Costs one
            pass over the nonzeros; turn off when only speed matters (the loss is then NaN).
        **part_params: hyperparameters of the parts, routed by name to the registered weighting
            or solver that declares them (their defaults live there): e.g. ``alpha`` (hkv's
            confidence slope), ``alpha0`` (iALS's unobserved weight), ``cg_steps`` (CG steps
            per half-epoch). Parts given as objects carry their own.
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
        weighting: str | Weighting = "hkv",
        reg_exponent: float | None = None,
        use_bias: bool = True,
        solver: str | Solver = "cholesky",
        device: str = "auto",
        dtype: str = "float32",
        seed: int = 0,
        memory_budget_mb: float = 1024.0,
        init_std: float | None = None,
        calculate_loss: bool = True,
        **part_params: Any,
    ) -> None:
        check_settings(
            n_factors, regularization, bias_regularization, use_bias, iterations, memory_budget_mb
        )
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        unknown = sorted(set(part_params) - set(part_parameters()))
        if unknown:
            own = [p for p in inspect.signature(ALS).parameters if p != "part_params"]
            accepted = sorted([*own, *part_parameters()])
            raise ValueError(
                f"unknown ALS argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
            )
        self.n_factors = int(n_factors)
        self.regularization = float(regularization)
        self.bias_regularization = float(
            regularization if bias_regularization is None else bias_regularization
        )
        self.iterations = int(iterations)
        self.use_bias = bool(use_bias)
        self.seed = int(seed)
        self.memory_budget_mb = float(memory_budget_mb)
        self.init_std = None if init_std is None else float(init_std)
        self.calculate_loss = bool(calculate_loss)
        self._reg_exponent = None if reg_exponent is None else float(reg_exponent)
        self.weighting: Weighting = WEIGHTINGS.resolve(weighting, part_params)
        self.solver: Solver = SOLVERS.resolve(solver, part_params)
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
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
    def params(self) -> dict[str, Any]:
        """The arguments that rebuild this model, JSON-ready: ``ALS(**model.params)`` (the
        parts by registry name with their hyperparameters, flat; the device is not among them)."""
        dtype = next(name for name, value in DTYPES.items() if value == self.dtype)
        return {
            "n_factors": self.n_factors,
            "regularization": self.regularization,
            "bias_regularization": self.bias_regularization,
            "iterations": self.iterations,
            "weighting": self.weighting.name,
            **dataclasses.asdict(self.weighting),
            "reg_exponent": self._reg_exponent,
            "use_bias": self.use_bias,
            "solver": self.solver.name,
            **dataclasses.asdict(self.solver),
            "dtype": dtype,
            "seed": self.seed,
            "memory_budget_mb": self.memory_budget_mb,
            "init_std": self.init_std,
            "calculate_loss": self.calculate_loss,
        }

    @property
    def reg_exponent(self) -> float:
        """nu: the one given, else the weighting's default."""
        nu = self._reg_exponent
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

    def _interactions(self, user_items: Any, name: str = "user_items") -> tuple[sp.csr_matrix, Any]:
        """`as_csr` under this model's weighting: a stored 0 is a rating where scores estimate
        the values (`uses_global_mean`), and no interaction for implicit weightings (where it
        would still get a target)."""
        return as_csr(user_items, name, keep_zeros=self.weighting.uses_global_mean)

    def equations(self) -> NormalEquations:
        """The normal equations of a side given the other, with the model's current settings."""
        return NormalEquations(
            weighting=self.weighting,
            solver=self.solver,
            n_factors=self.n_factors,
            regularization=self.regularization,
            bias_regularization=self.bias_regularization,
            reg_exponent=self.reg_exponent,
            memory_budget_mb=self.memory_budget_mb,
            global_bias=self.global_bias,
            device=self.device,
            dtype=self.dtype,
        )

    def exact_equations(self) -> NormalEquations:
        """`equations` with an exact solver: the model's own, or `CholeskySolver` when the model
        trains with an approximate one (a few CG steps from zero are far from a new row's
        solution; `implicit` also recalculates users with Cholesky for this reason)."""
        eq = self.equations()
        return eq if self.solver.exact else dataclasses.replace(eq, solver=CholeskySolver())

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
        The factor tensors are updated in place every epoch: a callback that keeps an epoch's
        factors must copy them.
        """
        matrix, source = self._interactions(user_items)
        if not (resume and self.is_fitted):
            check_fit_memory(
                matrix, self.n_factors, self.use_bias, self.dtype, self.solver.exact, self.device
            )
        self._start(matrix, source, resume)
        with self.solver.scratch():
            if distributed:
                from recsys.als.distributed import train_sharded

                comm = None if distributed is True else distributed
                return train_sharded(self, matrix, callback, comm)
            train(LocalStrategy(self, matrix), callback)
        return self

    def _start(self, matrix: sp.csr_matrix, source: Any, resume: bool) -> None:
        """Initialise the parameters for `matrix`, or check that a resumed model fits it."""
        self.weighting.check_values(torch.from_numpy(matrix.data))
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
        self.user_ids = ids_to_array(getattr(source, "user_ids", self.user_ids))
        self.item_ids = ids_to_array(getattr(source, "item_ids", self.item_ids))

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
        if not self.solver.exact:
            exact = [name for name in SOLVERS.names() if SOLVERS.get(name).exact]
            raise ValueError(
                "sample_posterior needs exact solves: build the model with "
                + " or ".join(f"solver={name!r}" for name in exact)
            )
        if prior not in ("learned", "fixed"):
            raise ValueError(f"prior must be 'learned' or 'fixed', got {prior!r}")
        matrix, _ = self._interactions(user_items)
        if matrix.shape != (self.n_users, self.n_items):
            raise ValueError(
                f"user_items is {matrix.shape[0]} x {matrix.shape[1]} but the model was fitted "
                f"on {self.n_users} users x {self.n_items} items"
            )
        seed = self.seed if seed is None else int(seed)
        sample_posterior(self, matrix, int(samples), int(burn_in), seed, prior)
        self.posterior = {
            "samples": int(samples), "burn_in": int(burn_in), "seed": seed, "prior": prior,
        }  # fmt: skip
        return self

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
        std = self.init_std or self.weighting.init_std(f)
        rng = np.random.default_rng(self.seed)

        def draw(n: int) -> torch.Tensor:
            values = rng.standard_normal((n, f), dtype=np.float32)
            values *= np.float32(std)  # in place: a second table of fresh memory costs more
            return torch.from_numpy(values).to(self.device, self.dtype)

        self.user_factors, self.item_factors = draw(shape[0]), draw(shape[1])
        if self.use_bias:
            self.user_bias = torch.zeros(shape[0], device=self.device, dtype=self.dtype)
            self.item_bias = torch.zeros(shape[1], device=self.device, dtype=self.dtype)
        else:
            self.user_bias = self.item_bias = None

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("the model is not fitted yet: call fit() or ALS.load() first")

    def _index_tensor(self, ids: Any, n: int, what: str) -> torch.Tensor:
        return torch.as_tensor(checked_indices(ids, n, what), device=self.device)

    def _stored_queries(self, user_ids: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """`queries` of trained users."""
        self._require_fitted()
        idx = self._index_tensor(user_ids, self.n_users, "user")
        bias = None if self.user_bias is None else self.user_bias[idx]
        return queries(self.user_factors[idx], bias, self.global_bias)

    def user_embeddings(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Query vectors q_u (float32): score(u, i) = q_u . item_embeddings()[i] + user_offsets."""
        return self._stored_queries(user_ids)[0].cpu().numpy()

    def item_embeddings(self) -> np.ndarray:
        """Item vectors (float32, n_items x d), the item bias folded in as the last dimension."""
        self._require_fitted()
        y = self.item_factors
        if self.item_bias is not None:
            y = torch.cat([y, self.item_bias[:, None]], dim=1)
        return y.float().cpu().numpy()

    def user_offsets(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-user constant of every score: the user bias plus the global mean."""
        return self._stored_queries(user_ids)[1].cpu().numpy()

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
        user_items: Any = None,
        k: int = 10,
        filter_seen: bool = True,
        filter_items: Any = None,
        items: Any = None,
        *,
        recalculate_user: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per user by exact score over the whole catalog (or `items`).

        `user_items` holds one row per entry of `user_ids` (their interactions, as in `implicit`);
        with `filter_seen` those items are excluded. With `recalculate_user` the users' vectors
        are solved from those rows (`fold_in_factors`) instead of read from the model, so the
        ids may be users the model has never seen. `items` restricts the candidates and
        `filter_items` are excluded for everyone (within `items` when both are given).
        Returns internal item ids (int64) and scores (float32), both (len(user_ids), k), or
        (k,) for one scalar user id; slots beyond the number of eligible items hold id -1,
        score -inf.
        """
        self._require_fitted()
        if recalculate_user:  # the ids only label the rows: new users have no index yet
            n_users = index_array(user_ids, "user").size
        else:
            vectors, offsets = self._stored_queries(user_ids)
            n_users = vectors.shape[0]
        rows = None
        if filter_seen or recalculate_user:
            if user_items is None:
                flag = "filter_seen" if filter_seen else "recalculate_user"
                raise ValueError(f"{flag}=True needs user_items (one row per user id)")
            rows, _ = self._interactions(user_items)
            if rows.shape != (n_users, self.n_items):
                raise ValueError(
                    f"user_items must have one row per user id and one column per item: "
                    f"expected {(n_users, self.n_items)}, got {rows.shape}"
                )
        if recalculate_user:
            vectors, offsets = queries(*self.fold_in_factors(rows), self.global_bias)
        allowed = allowed_mask(items, filter_items, self.n_items, "item")
        top = topk_items(
            vectors,
            torch.from_numpy(self.item_embeddings()).to(self.device),
            list_length(k),
            exclude=rows if filter_seen else None,
            user_offsets=offsets,
            allowed_items=mask_tensor(allowed, self.device),
        )
        return as_results(user_ids, top)

    def similar_items(
        self,
        item_ids: Any,
        k: int = 10,
        filter_items: Any = None,
        items: Any = None,
        *,
        exclude_self: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most cosine-similar items to each of `item_ids`, by their factors (no bias).

        With `exclude_self` (the default) an item is never its own neighbour; with
        ``exclude_self=False`` it is kept and comes first (cosine 1) as in `implicit`, unless
        another item's factors point the same way. `items` and `filter_items` restrict the
        candidates as in `recommend`. Returns ids (int64) and cosines (float32), (n, k), or
        (k,) for one scalar id; slots beyond the eligible items hold id -1, score -inf.
        """
        return self._neighbours("item", item_ids, k, items, filter_items, exclude_self)

    def similar_users(
        self,
        user_ids: Any,
        k: int = 10,
        filter_users: Any = None,
        users: Any = None,
        *,
        exclude_self: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most cosine-similar users to each of `user_ids`, by their factors (no bias):
        `similar_items` on the user side (`users` / `filter_users` restrict the candidates)."""
        return self._neighbours("user", user_ids, k, users, filter_users, exclude_self)

    def _neighbours(
        self, side: str, ids: Any, k: int, include: Any, exclude: Any, exclude_self: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """`cosine_neighbours` among the `side` ("item" or "user") factors."""
        self._require_fitted()
        table = getattr(self, f"{side}_factors")
        idx = self._index_tensor(ids, table.shape[0], side)
        allowed = allowed_mask(include, exclude, table.shape[0], side)
        return as_results(ids, cosine_neighbours(table, idx, list_length(k), allowed, exclude_self))

    # ------------------------------------------------------------------ fold-in
    def fold_in_factors(self, user_items: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Factors (and biases) of users given by their rows, against the fixed item side.

        Each row is one exact solve of the same normal equations training uses, whatever the
        training solver, so a training user's row reproduces its trained vector (with the
        exact solver; after a user half-epoch).
        """
        self._require_fitted()
        self._require_single("fold in users")
        return self._solve_against("item", user_items, "user_items")

    def _solve_against(
        self, fixed: str, matrix: Any, name: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One exact solve per row of `matrix` against the `fixed` side ("item" or "user")."""
        rows, _ = self._interactions(matrix, name)
        factors, bias = getattr(self, f"{fixed}_factors"), getattr(self, f"{fixed}_bias")
        if rows.shape[1] != factors.shape[0]:
            raise ValueError(
                f"{name} must have {factors.shape[0]} columns ({fixed}s), got {rows.shape[1]}"
            )
        self.weighting.check_values(torch.from_numpy(rows.data))
        current = torch.zeros(rows.shape[0], self.n_factors, device=self.device, dtype=self.dtype)
        current_bias = None if bias is None else current[:, 0].clone()
        eq = self.exact_equations()
        with eq.solver.scratch():
            return eq.solve_copy(eq.rows(rows), factors, bias, current, current_bias)

    def fold_in(self, user_items: Any) -> np.ndarray:
        """Query embeddings (as `user_embeddings`) for new or changed users given their rows."""
        return queries(*self.fold_in_factors(user_items), self.global_bias)[0].cpu().numpy()

    def partial_fit_users(self, user_ids: Any, user_items: Any) -> None:
        """Recompute (or add, for ids >= n_users) the given users from their rows (one exact
        solve each, as `fold_in_factors`)."""
        factors, bias = self.fold_in_factors(user_items)
        self.user_factors, self.user_bias = self._scatter(
            self.user_factors, self.user_bias, user_ids, factors, bias
        )

    def partial_fit_items(self, item_ids: Any, item_users: Any) -> None:
        """Recompute (or add) the given items from their columns (rows: item x users CSR), one
        exact solve each."""
        self._require_fitted()
        self._require_single("refit items")
        factors, bias = self._solve_against("user", item_users, "item_users")
        self.item_factors, self.item_bias = self._scatter(
            self.item_factors, self.item_bias, item_ids, factors, bias
        )

    def _scatter(self, table, table_bias, ids, factors, bias):
        """Write rows into a factor table, growing it with zero rows for new ids."""
        idx = torch.as_tensor(index_array(ids, "partial fit"), device=self.device)
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
    def save(self, file: ModelFile) -> Path | None:
        """Write one self-describing `.npz` (no pickle): to a path atomically (returns it), or
        into an open binary file object such as `io.BytesIO` (returns None; not atomic)."""
        self._require_fitted()
        return save_model(self, file)

    @classmethod
    def load(cls, file: ModelFile, device: str = "cpu") -> ALS:
        """Read a file written by `save`, from a path or an open binary file object (never
        executes code from it), onto `device`."""
        return load_model(cls, file, device)
