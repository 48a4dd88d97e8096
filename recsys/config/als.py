"""``als``: the schema of the model's hyperparameters, built from `ALS` and the part registries.

Nothing here is written twice: the model's own arguments, their types and defaults come from the
`ALS` signature; the weighting and solver names, their hyperparameters (``als.alpha``,
``als.alpha0``, ``als.cg_steps``, ...), types, defaults and range checks from the registered
parts' dataclasses. A bad part value fails with the part's own check, reported under its key.
Only the keys that say how to run training (:data:`RUN_FIELDS`) are the config's own. Keys stay
flat, so a part registered by a plugin (``plugins=[module]``) adds its keys to ``als.*``.
"""

import dataclasses
import importlib
import inspect
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import field
from typing import Any

from omegaconf import II

from recsys.als import ALS, SOLVERS, WEIGHTINGS
from recsys.als.model import DTYPES
from recsys.als.registry import ParameterError, Registry
from recsys.config.checks import ConfigError, fail, int_at_least, number_at_least, one_of

#: ``als.*`` keys that say how to run training, not what the model is (not `ALS` arguments):
#: ``distributed`` trains one model across the processes of a ``torchrun`` job (users and items
#: sharded over the ranks, see :mod:`recsys.als.distributed`); a rank that waits longer than
#: ``distributed_timeout_s`` seconds for the others fails with an error instead of hanging;
#: ``posterior_*`` configure `ALS.sample_posterior` after training (0 samples: none)
RUN_FIELDS: tuple[tuple[str, type, Any], ...] = (
    ("distributed", bool, False),
    ("distributed_timeout_s", float, 600.0),
    ("posterior_samples", int, 0),
    ("posterior_burn_in", int, 5),
    ("posterior_prior", str, "learned"),
)
POSTERIOR_PRIORS = ("learned", "fixed")


def _model_fields() -> list[tuple[str, Any, Any]]:
    """`ALS`'s own arguments as (name, type, field); a part is chosen by its name here."""
    hints = typing.get_type_hints(ALS.__init__)
    out = []
    for name, p in inspect.signature(ALS).parameters.items():
        if p.kind is p.VAR_KEYWORD:
            continue
        kind = str if name in ("weighting", "solver") else hints[name]
        out.append((name, kind, field(default=II("seed") if name == "seed" else p.default)))
    return out


def _part_fields(registry: Registry[Any]) -> list[tuple[str, Any, Any]]:
    """The hyperparameters of every registered part (a name shared by parts appears once)."""
    out: dict[str, tuple[str, Any, Any]] = {}
    for name in registry.names():
        cls = registry.get(name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = (
                field(default=f.default)
                if f.default is not dataclasses.MISSING
                else field(default_factory=f.default_factory)
            )
            out.setdefault(f.name, (f.name, hints[f.name], default))
    return list(out.values())


def _check_parts(cfg: Any) -> None:
    """Every registered part built from the config's values: its own checks raise."""
    one_of("als.weighting", cfg.weighting, WEIGHTINGS.names())
    one_of("als.solver", cfg.solver, SOLVERS.names())
    for registry in (WEIGHTINGS, SOLVERS):
        for name in registry.names():
            cls = registry.get(name)
            try:
                cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})
            except ParameterError as err:
                fail(f"als.{err.field}", err.value, err.requirement)


def _check(cfg: Any) -> None:
    int_at_least("als.n_factors", cfg.n_factors, 1)
    number_at_least("als.regularization", cfg.regularization, 0.0)
    if cfg.bias_regularization is not None:
        number_at_least("als.bias_regularization", cfg.bias_regularization, 0.0)
    int_at_least("als.iterations", cfg.iterations, 1)
    if cfg.reg_exponent is not None:
        number_at_least("als.reg_exponent", cfg.reg_exponent, 0.0)
    _check_parts(cfg)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(cfg.device)):
        fail("als.device", cfg.device, "must be one of auto, cpu, cuda, cuda:<n>")
    one_of("als.dtype", cfg.dtype, sorted(DTYPES))
    number_at_least("als.memory_budget_mb", cfg.memory_budget_mb, 0.0, strict=True)
    if cfg.init_std is not None:
        number_at_least("als.init_std", cfg.init_std, 0.0, strict=True)
    number_at_least("als.distributed_timeout_s", cfg.distributed_timeout_s, 0.0, strict=True)
    int_at_least("als.posterior_samples", cfg.posterior_samples, 0)
    int_at_least("als.posterior_burn_in", cfg.posterior_burn_in, 0)
    one_of("als.posterior_prior", cfg.posterior_prior, POSTERIOR_PRIORS)
    if cfg.posterior_samples and not SOLVERS.get(cfg.solver).exact:
        exact = "|".join(name for name in SOLVERS.names() if SOLVERS.get(name).exact)
        fail("als.posterior_samples", cfg.posterior_samples, f"needs als.solver={exact}")
    if cfg.posterior_samples and cfg.distributed:
        fail(
            "als.posterior_samples",
            cfg.posterior_samples,
            "runs in one process; set als.distributed=false",
        )
    if cfg.use_bias and not (
        cfg.regularization > 0 and (cfg.bias_regularization is None or cfg.bias_regularization > 0)
    ):
        fail(
            "als.use_bias",
            True,
            "needs als.regularization > 0 and als.bias_regularization > 0 (or null)",
        )


def model_kwargs(cfg: Any) -> dict[str, Any]:
    """The `ALS` keyword arguments of this config: every key but the run settings
    (:data:`RUN_FIELDS`); ``ALS(**cfg.als.model_kwargs())`` builds the configured model."""
    kwargs = dataclasses.asdict(cfg)
    for name, _, _ in RUN_FIELDS:
        kwargs.pop(name)
    return kwargs


_DOC = """``als``: hyperparameters of :class:`recsys.als.ALS` (see its docstring for the maths),
of its registered weightings and solvers (flat: ``als.alpha``, ``als.cg_steps``, ...), and the
run settings of :data:`recsys.config.als.RUN_FIELDS`. Built by :func:`als_schema`."""

_BUILT: dict[tuple[type, ...], type] = {}


def als_schema() -> type:
    """The ``als`` schema for the parts registered now (built once per set of parts)."""
    key = tuple(r.get(n) for r in (WEIGHTINGS, SOLVERS) for n in r.names())
    if key not in _BUILT:
        run = [(name, kind, field(default=default)) for name, kind, default in RUN_FIELDS]
        _BUILT[key] = dataclasses.make_dataclass(
            "ALSConfig",
            [*_model_fields(), *_part_fields(WEIGHTINGS), *_part_fields(SOLVERS), *run],
            namespace={
                "__doc__": _DOC,
                "__module__": __name__,
                "__post_init__": _check,
                "model_kwargs": model_kwargs,
            },
        )
    return _BUILT[key]


#: the schema with the built-in parts (plugins registered later get :func:`als_schema`'s)
ALSConfig = als_schema()


def load_plugins(modules: Iterable[str]) -> None:
    """Import `modules` (dotted names on ``sys.path``), whose parts register themselves."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(
                f"plugins=[{name}]: cannot import it ({err}); put its folder on PYTHONPATH"
            ) from None


def plugins_in_overrides(overrides: Sequence[str]) -> list[str]:
    """The modules a command-line ``plugins=[a,b]`` (or ``+plugins=...``) override names: they
    must be imported before Hydra composes the config, so that their keys exist."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") == "plugins":
            return [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
    return []
