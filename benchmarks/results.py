"""Ratios between the runs of one invocation: ours / implicit and ours / LensKit, per epoch, per
fit, to target."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.runs import EXACT_PEER_MODEL, REFERENCE_MODEL


def run_tag(r: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A tag of the run's spec (``sweep`` of the scaling mode, ``round`` of ``--rounds``)."""
    return r.get("spec", {}).get("tags", {}).get(name, default)


def _key(r: Mapping[str, Any]) -> tuple:
    return (
        r["dataset"],
        r["device"],
        r["factors"],
        r["iterations"],
        r["threads"],
        run_tag(r, "sweep"),
        run_tag(r, "round"),
    )


def succeeded(r: Mapping[str, Any]) -> bool:
    return not r.get("error")


def add_ratios(results: Sequence[dict[str, Any]], reference: str = REFERENCE_MODEL) -> None:
    """Set ``ratio_epoch`` and ``ratio_fit`` (ours / reference) on every ``ours-*`` result, and
    ``ratio_exact_peer_epoch`` and ``ratio_exact_peer_fit`` (ours / LensKit) when LensKit ran.

    The reference is the run with the same dataset, device, factors, iterations, threads
    (and scaling sweep, and round of ``--rounds``) in the same invocation; without one the ratios
    are None.
    """
    _add_ratios(results, reference, "reference", "ratio")
    if any(r["model"] == EXACT_PEER_MODEL for r in results):
        _add_ratios(results, EXACT_PEER_MODEL, "exact_peer", "ratio_exact_peer")


def _add_ratios(results: Sequence[dict[str, Any]], reference: str, name: str, prefix: str) -> None:
    """``<prefix>_epoch`` and ``<prefix>_fit`` (ours / ``reference``), ``name``: the reference."""
    refs = {_key(r): r for r in results if r["model"] == reference and succeeded(r)}
    for r in results:
        if r["library"] != "ours":
            continue
        ref = refs.get(_key(r))
        ok = ref is not None and succeeded(r)
        r[name] = reference if ok else None
        r[f"{prefix}_epoch"] = r["seconds_per_epoch"] / ref["seconds_per_epoch"] if ok else None
        r[f"{prefix}_fit"] = r["fit_seconds"] / ref["fit_seconds"] if ok else None


def add_ttq_ratios(results: Sequence[dict[str, Any]], reference: str = REFERENCE_MODEL) -> None:
    """``ratio_ttq``: seconds to target / the fastest reference run's (same dataset and device)."""
    best: dict[tuple, float] = {}
    for r in results:
        if r["model"] == reference and succeeded(r) and r.get("seconds_to_target") is not None:
            k = (r["dataset"], r["device"])
            best[k] = min(best.get(k, math.inf), r["seconds_to_target"])
    for r in results:
        ref = best.get((r["dataset"], r["device"]))
        mine = r.get("seconds_to_target") if succeeded(r) else None
        r["ratio_ttq"] = mine / ref if ref and mine is not None else None
        r["reference_seconds_to_target"] = ref
