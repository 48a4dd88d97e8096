"""The search space of a study: Hydra sweep expressions as Optuna distributions.

The grammar is Hydra's override grammar, the one of the official ``hydra-optuna-sweeper``:
``interval(a, b)`` (floats), ``int(interval(a, b))`` (integers), ``tag(log, ...)`` (a log
scale), ``choice(a, b)`` or ``a,b`` (categories) and ``range(start, stop[, step])`` (stop
excluded, as in Python). An override without a sweep is fixed for every trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SpaceError", "override_value", "search_space"]


class SpaceError(ValueError):
    """A search expression that cannot become a distribution (one line naming the key)."""


def search_space(
    params: Mapping[str, str], arguments: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """``(distributions, fixed)``: the Optuna distribution of every swept key of `params`
    (``hydra.sweeper.params``) and the command-line `arguments` (which win over `params` for
    the same key), and the ``key=value`` overrides that are not sweeps, in their order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except HydraException as err:
        raise SpaceError(" ".join(str(err).split())) from None
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in overrides:
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = _distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())


def _distribution(override: Any) -> Any:
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key = override.get_key_element()
    value = override.value()
    if override.is_interval_sweep():
        log = "log" in value.tags
        if log and not value.start > 0:
            raise SpaceError(f"{key}: a log scale needs a start above 0, not {value.start}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    values = list(override.sweep_iterator())
    if not values:
        raise SpaceError(f"{override.input_line}: the sweep holds no value")
    if override.is_range_sweep() and not value.shuffle:
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(values[0], values[-1], step=value.step)
    for v in values:
        if not isinstance(v, str | int | float | bool | type(None)):
            raise SpaceError(f"{key}: a choice takes plain values, not {v!r}")
    return CategoricalDistribution(values)


def override_value(value: Any) -> str:
    """`value` as Hydra's override grammar writes it (``true``, ``null``, ``0.001``, quoted
    strings where the grammar needs quotes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    plain = text and all(c.isalnum() or c in "_-./:" for c in text)
    return text if plain else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
