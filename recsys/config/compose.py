"""Validation of a composed config and the Hydra glue: ConfigStore, resolvers, override checks.

This is the only part of the package that knows about Hydra, and only inside
:func:`register_configs` and :func:`check_overrides` (imported lazily), so ``recsys.pipeline``
can use the schemas without importing Hydra.
"""

import dataclasses
import datetime as _dt
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recsys.config.als import als_schema, load_plugins, plugins_in_overrides
from recsys.config.checks import ConfigError, did_you_mean, show
from recsys.config.schemas import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    IndexConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    train_schema,
)

#: The repository root (the folder holding ``conf/`` and ``recsys/``): relative dataset paths in
#: the shipped configs (``${repo:../shared/data/gowalla}``) resolve against it, not the cwd.
REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ validation
def validate(cfg: Any) -> TrainConfig:
    """Check a composed config (DictConfig, dict or TrainConfig) and return a :class:`TrainConfig`.

    Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` with a one-line
    message. Interpolations are resolved. The input is not modified.
    """
    if isinstance(cfg, TrainConfig):
        cfg = OmegaConf.structured(cfg)
    try:
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=False)
        load_plugins(cfg.get("plugins") or [])
        schema = OmegaConf.structured(train_schema())
        merged = OmegaConf.merge(schema, cfg)
        result = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        raise ConfigError(format_error(err)) from None
    assert isinstance(result, TrainConfig)
    return result


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The plain, resolved mapping of a :class:`TrainConfig` (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


#: The Hydra config groups (``group=option`` on the command line); each YAML extends base_<group>.
GROUPS = ("als", "data", "split", "index", "eval")
#: The ConfigStore names of the schemas start with it (``base_config``, ``base_als``, ...): what
#: the YAML options extend, never an option to choose, so no list of options shows them.
SCHEMA_PREFIX = "base_"


def _schemas() -> dict[str, type]:
    """The schema of every group, ``als`` with the parts registered now."""
    return {
        "als": als_schema(),
        "data": DataConfig,
        "split": SplitConfig,
        "index": IndexConfig,
        "eval": EvalConfig,
        "tracking": TrackingConfig,
        "checkpoint": CheckpointConfig,
    }


def _allowed_keys(parent: str) -> list[str] | None:
    schema = train_schema() if parent == "" else _schemas().get(parent)
    if schema is None:
        return None
    return [f.name for f in dataclasses.fields(schema)]


def _root_cause(err: BaseException) -> BaseException:
    """The first ConfigError or OmegaConf error in `err`'s ``raise ... from`` chain, else `err`."""
    node: BaseException | None = err
    for _ in range(20):
        if node is None:
            break
        if isinstance(node, ConfigError | OmegaConfBaseException):
            return node
        node = node.__cause__
    return err


def format_error(err: BaseException) -> str:
    """One line saying what is wrong with a config, for Hydra and OmegaConf errors alike."""
    if isinstance(err, ConfigError):
        return str(err)
    options = getattr(err, "options", None)
    missing = getattr(err, "missing_cfg_file", None)
    if missing is not None or options is not None:  # hydra MissingConfigException: bad group
        group, _, name = str(missing or "").rpartition("/")
        shown = sorted(o for o in (options or []) if not o.startswith(SCHEMA_PREFIX))
        if group:
            hint = did_you_mean(name, shown)
            return f"{group}={name}: unknown option; must be one of {', '.join(shown)}{hint}"
        return str(err).splitlines()[0]
    cause = _root_cause(err)
    if isinstance(cause, ConfigError):
        return str(cause)
    if isinstance(cause, OmegaConfBaseException):
        full_key = getattr(cause, "full_key", None) or ""
        first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        key_match = re.match(r"Key '([^']+)' not in '", first)
        if key_match or "not in struct" in first or "is not in struct" in first:
            parent, _, name = full_key.rpartition(".")
            allowed = _allowed_keys(parent)
            where = f"in {parent}" if parent else "at the top level"
            extra = f"; allowed keys {where}: {', '.join(allowed)}" if allowed else ""
            if allowed and name:
                extra += did_you_mean(name, allowed, f"{parent}." if parent else "")
            return f"{full_key or first}: unknown key{extra}"
        value = getattr(cause, "value", None)
        shown = f"={show(value)}" if value is not None else ""
        return f"{full_key}{shown}: {_describe_type_error(first)}" if full_key else first
    text = str(err).splitlines()
    return " ".join(line.strip() for line in text if line.strip())


def _describe_type_error(message: str) -> str:
    m = re.search(r"could not be converted to (\w+)", message)
    if m:
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}
        return f"must be {kind.get(m.group(1), m.group(1))}"
    if "is not a valid bool" in message:
        return "must be true or false"
    if "is not a ListConfig" in message:
        return "must be a list, e.g. [10,20]"
    if "is not Optional" in message or "non-optional" in message.lower():
        return "must not be null"
    return message


# ------------------------------------------------------------------------------ hydra glue
def _run_dir_resolver(run_dir: Any, resume: Any, root: str, stamp: str) -> str:
    """``hydra.run.dir``: ``run_dir`` when given; with ``resume`` the newest unfinished run."""
    if run_dir:
        return str(run_dir)
    if resume in (True, "true", "True"):
        latest = latest_unfinished_run(Path(root))
        if latest is not None:
            return str(latest)
    return str(Path(root) / stamp)


def latest_unfinished_run(root: Path) -> Path | None:
    """The newest ``<root>/<date>/<time>`` folder holding a checkpoint but no ``metrics.json``."""
    if not root.is_dir():
        return None
    found = [
        p.parent.parent
        for p in root.glob("*/*/checkpoints/LATEST")
        if not (p.parent.parent / "metrics.json").exists()
    ]
    return max(found, key=lambda p: (p.parent.name, p.name), default=None)


def _repo_resolver(relative: str) -> str:
    return str((REPO_ROOT / relative).resolve())


def repo_root() -> Path:
    """The repository root against which ``${repo:...}`` paths resolve."""
    return REPO_ROOT


def _config_groups_help() -> str:
    """``${recsys_config_groups:}``: the ``group: option, ...`` lines of ``scripts/train.py
    --help`` (``hydra.help.template``), without the ``base_<group>`` schemas that Hydra's own
    ``$APP_CONFIG_GROUPS`` lists as if they were options."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(loader.list_groups("")):
        options = [o for o in loader.get_group_options(group) if not o.startswith(SCHEMA_PREFIX)]
        if group != "hydra" and options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def register_resolvers() -> None:
    """``${repo:rel/path}``, ``${recsys_run_dir:...}`` and ``${recsys_config_groups:}``;
    idempotent."""
    for name, fn in (
        ("repo", _repo_resolver),
        ("recsys_run_dir", _run_dir_resolver),
        ("recsys_config_groups", _config_groups_help),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def register_configs(plugins: Iterable[str] = ()) -> None:
    """Import the `plugins` modules, then register the schemas (with their parts) in Hydra's
    ConfigStore (``base_<group>``) and the resolvers."""
    from hydra.core.config_store import ConfigStore

    load_plugins(plugins)
    register_resolvers()
    store = ConfigStore.instance()
    store.store(name=f"{SCHEMA_PREFIX}config", node=train_schema())
    for group in GROUPS:
        store.store(group=group, name=f"{SCHEMA_PREFIX}{group}", node=_schemas()[group])


def _expand(overrides: Sequence[str], multirun: bool) -> tuple[list[list[str]], str | None]:
    """The override lists to check: one per value of every sweep, others at their first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        return [], " ".join(str(err).split())
    base: list[str] = []
    sweeps: list[list[str]] = []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            if not multirun:
                return [], (
                    f"{o.input_line}: a sweep over several values needs -m (--multirun); for a "
                    "list write key=[a,b], for a string with commas quote it"
                )
            if not o.is_discrete_sweep():  # interval(...) for Optuna: checked when the job runs
                continue
            values = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            if values:
                base.append(values[0])
                sweeps.append(values)
        else:
            base.append(str(o.input_line))
    combos = [base]
    for values in sweeps:
        first = values[0]
        for v in values[1:]:
            combos.append([v if item == first else item for item in base])
    return combos, None


def check_overrides(
    overrides: Sequence[str],
    *,
    config_dir: str | os.PathLike[str],
    config_name: str = "config",
    multirun: bool = False,
) -> str | None:
    """Compose and validate the config for command-line `overrides`; the one-line error or None.

    Used by the scripts before handing over to ``@hydra.main``, whose own messages span several
    lines: every value of a sweep is checked, so ``-m als.n_factors=8,0`` fails before any job.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        register_configs(plugins_in_overrides(overrides))
    except ConfigError as err:
        return str(err)
    combos, problem = _expand(overrides, multirun)
    if problem:
        return problem
    for combo in combos:
        initialised = GlobalHydra.instance().is_initialized()
        if initialised:
            GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(
                config_dir=str(Path(config_dir).resolve()), version_base="1.3"
            ):
                cfg = compose(config_name=config_name, overrides=combo)
            validate(cfg)
        except ConfigError as err:
            return str(err)
        except Exception as err:  # hydra composition errors
            return format_error(err)
    return None


def now_stamp() -> str:
    """``YYYY-MM-DD/HH-MM-SS``, the layout Hydra uses for its run folders."""
    return _dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"als": {"n_factors": 8}}`` -> ``{"als.n_factors": 8}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def differing_keys(a: dict[str, Any], b: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two nested mappings (ignoring `ignore` prefixes)."""
    fa, fb = flatten(a), flatten(b)
    skip = tuple(ignore)
    keys = sorted(set(fa) | set(fb))
    return [
        k
        for k in keys
        if fa.get(k) != fb.get(k) and not any(k == s or k.startswith(s + ".") for s in skip)
    ]
