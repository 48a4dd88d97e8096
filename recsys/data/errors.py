"""The one exception type of the data layer.

Every problem with input data (a malformed line, a missing column, a non-numeric id, NaN, an empty
file, an empty split, ...) is raised as :class:`DataError`. The message always says *where* (the
file and, when there is one, the 1-based line number) and *what to do about it*, so a command-line
entry point can print ``str(err)`` and exit without a traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["DataError", "describe"]


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
        return describe(self.problem, path=self.path, line=self.line, fix=self.fix)


def describe(
    problem: str,
    *,
    path: str | PathLike[str] | None = None,
    line: int | None = None,
    fix: str | None = None,
) -> str:
    """The one-line text of a data problem: ``"<file>, line <n>: <problem>. <Fix>."`` (also
    used for warnings about data that loads, so they read like the errors)."""
    where = ""
    if path is not None:
        where = str(path) if line is None else f"{path}, line {line}"
        where += ": "
    elif line is not None:
        where = f"line {line}: "
    text = where + problem.rstrip(".") + "."
    if fix:
        fix = fix.rstrip(".")
        text += " " + fix[:1].upper() + fix[1:] + "."
    return text
