"""Name -> class registries for the swappable parts of ALS (weightings, solvers).

A new weighting or solver is one file with a dataclass plus one `register(...)` line: the model
looks parts up by name and passes each only the hyperparameters its dataclass declares.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of dataclass types of one kind (e.g. "weighting")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str):
        """Class decorator that makes `cls` available under `name`."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, **params: Any) -> T:
        """Instantiate `name` with the subset of `params` that its dataclass declares."""
        cls = self.get(name)
        accepted = (
            {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else ()
        )
        return cls(**{k: v for k, v in params.items() if k in accepted})
