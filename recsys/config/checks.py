"""The one-line errors of the configuration schemas and the range checks that raise them.

Every problem is a :class:`ConfigError` whose message is one line naming the key, the bad value
and what is allowed, e.g. ``als.n_factors=0: must be an integer >= 1``.
"""

import difflib
from collections.abc import Iterable, Sequence
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line naming the key and what to fix."""


def fail(key: str, value: Any, requirement: str) -> None:
    raise ConfigError(f"{key}={show(value)}: {requirement}")


def show(value: Any) -> str:
    """A value as it is written on the command line (null, true, [a,b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def int_at_least(key: str, value: Any, low: int) -> None:
    if not is_int(value) or value < low:
        fail(key, value, f"must be an integer >= {low}")


def number_at_least(key: str, value: Any, low: float, *, strict: bool = False) -> None:
    ok = is_number(value) and value == value and (value > low if strict else value >= low)
    if not ok:
        fail(key, value, f"must be a number {'>' if strict else '>='} {low:g}")


def one_of(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        fail(key, value, f"must be one of {', '.join(allowed)}")


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean <prefix><nearest>?"`` for the choice closest to the mistyped `word`
    (difflib's ratio of at least 0.6), or "" when none is close: the tail of a one-line error
    that lists the allowed keys, so a typo names its fix without reading the whole list."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def deferred(value: Any) -> bool:
    """True for a value OmegaConf has not resolved yet (a dataclass built with an II default)."""
    return isinstance(value, str) and "${" in value
