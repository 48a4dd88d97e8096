"""Tables of metric dicts: plain text for logs and the command line, markdown for run reports."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["format_metrics", "markdown_metrics"]


def _split_key(key: str) -> tuple[str, int | None]:
    name, sep, k = key.rpartition("@")
    if sep and k.isdigit():
        return name, int(k)
    return key, None


def _cell(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(
    metrics: Mapping[str, float], digits: int
) -> tuple[list[str], list[list[str]], list[tuple[str, str]]]:
    """``(header, rows, other)``: one row per metric with a cell per cut-off (``-`` where a
    metric lacks one), and the entries without a cut-off as ``(key, value)`` pairs."""
    rows: dict[str, dict[int, float]] = {}
    other: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name, k = _split_key(key)
        if k is None:
            other.append((key, _cell(value, digits)))
        else:
            rows.setdefault(name, {})[k] = value
    cols = sorted({k for vals in rows.values() for k in vals})
    header = ["metric", *(f"@{k}" for k in cols)]
    cells = [
        [name, *(f"{vals[k]:.{digits}f}" if k in vals else "-" for k in cols)]
        for name, vals in rows.items()
    ]
    return header, cells, other


def format_metrics(metrics: Mapping[str, float], digits: int = 4, title: str | None = None) -> str:
    """A table with one row per metric and one column per cut-off, then the other entries.

    ``{"recall@10": .1, "recall@20": .2, "ndcg@20": .3, "n_users_evaluated": 5}`` becomes::

        metric       @10     @20
        recall    0.1000  0.2000
        ndcg           -  0.3000
        n_users_evaluated: 5
    """
    header, rows, other = _table(metrics, digits)
    lines = [title] if title else []
    if rows:
        name_w = max(len(header[0]), *(len(r[0]) for r in rows))
        col_w = max(digits + 3, *(len(h) for h in header[1:]))
        for row in (header, *rows):
            lines.append(row[0].ljust(name_w) + "".join(f"  {c:>{col_w}}" for c in row[1:]))
    lines.extend(f"{key}: {value}" for key, value in other)
    return "\n".join(lines)


def markdown_metrics(metrics: Mapping[str, float], digits: int = 4) -> str:
    """The table of :func:`format_metrics` in markdown: the metrics by cut-off, then a second
    table of the other entries (seconds, epochs, counts)."""
    header, rows, other = _table(metrics, digits)
    blocks = []
    if rows:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        blocks.append("\n".join(lines))
    if other:
        lines = ["| entry | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in other]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
