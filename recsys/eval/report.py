"""Plain-text tables of metric dicts, for logs and the command line."""

from __future__ import annotations

from collections.abc import Mapping


def _split_key(key: str) -> tuple[str, int | None]:
    name, sep, k = key.rpartition("@")
    if sep and k.isdigit():
        return name, int(k)
    return key, None


def format_metrics(metrics: Mapping[str, float], digits: int = 4, title: str | None = None) -> str:
    """A table with one row per metric and one column per cut-off, then the other entries.

    ``{"recall@10": .1, "recall@20": .2, "ndcg@20": .3, "n_users_evaluated": 5}`` becomes::

        metric       @10     @20
        recall    0.1000  0.2000
        ndcg           -  0.3000
        n_users_evaluated: 5
    """
    rows: dict[str, dict[int, float]] = {}
    ks: set[int] = set()
    other: list[str] = []
    for key, value in metrics.items():
        name, k = _split_key(key)
        if k is None:
            shown = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
            other.append(f"{key}: {shown}")
            continue
        rows.setdefault(name, {})[k] = value
        ks.add(k)
    cols = sorted(ks)
    lines = [title] if title else []
    if rows:
        name_w = max(len("metric"), *(len(n) for n in rows))
        col_w = max(digits + 3, *(len(f"@{k}") for k in cols))
        lines.append("metric".ljust(name_w) + "".join(f"  {f'@{k}':>{col_w}}" for k in cols))
        for name, vals in rows.items():
            cells = (f"{vals[k]:.{digits}f}" if k in vals else "-" for k in cols)
            lines.append(name.ljust(name_w) + "".join(f"  {c:>{col_w}}" for c in cells))
    lines.extend(other)
    return "\n".join(lines)
