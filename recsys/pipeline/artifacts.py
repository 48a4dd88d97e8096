"""The files of a run folder: their names, atomic writes, and the leftovers of a killed run.

Every artifact is written atomically (temp file + ``os.replace``), the model first and
``metrics.json`` last, so a killed run never leaves a half-written file and a run folder with
``metrics.json`` is complete.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from recsys.io import atomic_path

__all__ = [
    "CHECKPOINT_DIR",
    "INDEX_FILE",
    "METADATA_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "TB_DIR",
    "TRAIN_FILE",
    "artifact_paths",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temporaries",
]

MODEL_FILE = "model.npz"
TRAIN_FILE = "train.npz"
INDEX_FILE = "items.faiss"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` atomically and durably (see :func:`recsys.io.atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _strict_json(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers (Python would write NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented, strict JSON (non-finite numbers as null) to `path` atomically."""
    text = json.dumps(_strict_json(obj), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def artifact_paths(out: Path) -> dict[str, Path]:
    """Where each artifact of the run folder `out` lives (the keys metadata.json lists)."""
    return {
        "model": out / MODEL_FILE,
        "train": out / TRAIN_FILE,
        "index": out / INDEX_FILE,
        "index_sidecar": out / (INDEX_FILE + ".json"),
        "metrics": out / METRICS_FILE,
        "metadata": out / METADATA_FILE,
        "tensorboard": out / TB_DIR,
    }


def remove_stale_temporaries(out: Path) -> None:
    """Delete temp files a killed run left next to its artifacts (``.<artifact>.<random>``)."""
    names = (MODEL_FILE, TRAIN_FILE, INDEX_FILE, INDEX_FILE + ".json", METRICS_FILE, METADATA_FILE)
    for path in out.glob(".*"):
        if path.is_file() and any(path.name.startswith(f".{n}.") for n in names):
            path.unlink(missing_ok=True)
