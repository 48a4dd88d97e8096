"""The one exception type of the data layer.

Every problem with input data (a malformed line, a missing column, a non-numeric id, NaN, an empty
file, an empty split, ...) is raised as :class:`DataError`. The message always says *where* (the
file and, when there is one, the 1-based line number) and *what to do about it*, so a command-line
entry point can print ``str(err)`` and exit without a traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad or unusable input data.

    Subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working.

    Attributes:
        path: the file the problem is in (``None`` for in-memory data).
        line: 1-based line number in ``path`` (``None`` when the problem is not tied to a line).
        problem: what is wrong, without the location.
        fix: what the user should do about it.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}, line {self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        text = where + self.problem.rstrip(".") + "."
        if self.fix:
            fix = self.fix.rstrip(".")
            text += " " + fix[:1].upper() + fix[1:] + "."
        return text
