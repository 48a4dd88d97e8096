"""Name -> class registries for the swappable parts of ALS (weightings, solvers).

A new weighting or solver is one file with a dataclass plus one `register(...)` line. The part's
dataclass fields are its hyperparameters: their defaults live there and nowhere else, its
`__post_init__` checks them (raising :class:`ParameterError`, which names the field), and
`ALS(**kwargs)` and the ``als.*`` config keys route every such field by name to the parts that
declare it, so registering the class is all a part needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ParameterError(ValueError):
    """A part's hyperparameter is out of range; `field` names it (e.g. "alpha")."""

    def __init__(self, field: str, value: Any, requirement: str) -> None:
        super().__init__(f"{field} {requirement}, got {value!r}")
        self.field = field
        self.value = value
        self.requirement = requirement


def require(ok: bool, field: str, value: Any, requirement: str) -> None:
    """Raise :class:`ParameterError` for `field` unless `ok` (e.g. requirement "must be >= 0")."""
    if not ok:
        raise ParameterError(field, value, requirement)


def parameters(cls: type) -> dict[str, dataclasses.Field]:
    """The hyperparameters (dataclass fields) a part class declares, by name."""
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


class Registry(Generic[T]):
    """A named collection of dataclass types of one kind (e.g. "weighting")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str):
        """Class decorator that makes `cls` available under `name` (and sets `cls.name`)."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def unregister(self, name: str) -> None:
        """Forget `name` (tests that register a part for one run)."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def parameters(self) -> dict[str, dataclasses.Field]:
        """Every hyperparameter any registered part declares (the first declaration of a name
        wins, for its type and default)."""
        found: dict[str, dataclasses.Field] = {}
        for name in self.names():
            for key, spec in parameters(self._classes[name]).items():
                found.setdefault(key, spec)
        return found

    def build(self, name: str, **params: Any) -> T:
        """Instantiate `name` with the subset of `params` that its dataclass declares."""
        cls = self.get(name)
        accepted = parameters(cls)
        return cls(**{k: v for k, v in params.items() if k in accepted})

    def resolve(self, part: str | T, params: dict[str, Any]) -> T:
        """The part `part`: a registered name built with the `params` its dataclass declares
        (others are ignored), or an instance used as it is (it carries its own parameters)."""
        if isinstance(part, str):
            return self.build(part, **params)
        clash = sorted(set(params) & set(parameters(type(part))))
        if clash:
            raise ValueError(
                f"{', '.join(clash)} given to ALS and to the {self.kind} object too; set "
                f"{'it' if len(clash) == 1 else 'them'} on the {self.kind} object only"
            )
        return part
