"""Finished run folders read back for serving (``scripts/recommend.py``, ``export_index.py``),
and the ``key=value`` command lines of those scripts (their keys, index file names and help)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.als import ALS
from recsys.config import TrainConfig, validate
from recsys.config.checks import did_you_mean
from recsys.data.interactions import Interactions
from recsys.pipeline.artifacts import (
    CHECKPOINT_DIR,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TRAIN_FILE,
    read_json,
)

__all__ = [
    "SavedRun",
    "index_file_name",
    "load_run",
    "parse_key_values",
    "positive_int",
    "script_help",
]


@dataclass
class SavedRun:
    """A finished run folder, loaded for serving (``scripts/recommend.py``, ``export_index.py``)."""

    folder: Path
    metadata: dict[str, Any]
    model: Any
    train: Any | None  # Interactions from train.npz (None when the run did not keep it)

    @property
    def config(self) -> TrainConfig:
        return validate(self.metadata["config"])


def load_run(run_dir: str | os.PathLike[str], *, device: str = "cpu") -> SavedRun:
    """Read ``metadata.json``, ``model.npz`` and ``train.npz`` of a completed run folder."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file() or not (folder / METRICS_FILE).is_file():
        finish = (
            f"finish it with scripts/train.py run_dir={folder} (index.* may change)"
            if (folder / CHECKPOINT_DIR / "LATEST").is_file()
            else "pass the folder scripts/train.py printed, e.g. outputs/<date>/<time>"
        )
        raise FileNotFoundError(
            f"{folder} holds no completed run (no {METADATA_FILE} / {METRICS_FILE}); {finish}"
        )
    metadata = read_json(meta_path)
    model = ALS.load(folder / MODEL_FILE, device=device)
    train = Interactions.load(folder / TRAIN_FILE) if (folder / TRAIN_FILE).is_file() else None
    return SavedRun(folder, metadata, model, train)


def positive_int(key: str, value: str) -> int:
    """A script's ``key=value`` as an integer >= 1 (ValueError naming the key otherwise)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{key}={value}: must be an integer >= 1")
    return number


def parse_key_values(argv: Sequence[str], allowed: Sequence[str]) -> dict[str, list[str]]:
    """``["run_dir=x", "user=1", "user=2,3"]`` -> ``{"run_dir": ["x"], "user": ["1", "2", "3"]}``.

    Values may be comma lists or ``[a,b]``; a key not in `allowed` raises ValueError naming the
    allowed keys and the nearest of them (one line).
    """
    out: dict[str, list[str]] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise ValueError(
                f"{arg}: expected key=value with key one of {', '.join(allowed)}"
                + (did_you_mean(key, allowed) if sep else "")
            )
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        parts = [v.strip().strip("'\"") for v in value.split(",")] if key != "item" else [value]
        out.setdefault(key, []).extend(p for p in parts if p != "")
    return out


def index_file_name(key: str, name: str, where: str) -> str:
    """`name` when it is a ``.faiss`` file name (no folder), the only index names the scripts'
    `key` (``out=`` of export_index.py, ``index=`` of recommend.py) take: the index then stays
    inside the run folder and neither it nor its sidecar (``<name>.json``) can be one of the
    run's other artifacts (``out=model.npz`` would replace the only model, ``out=metadata`` the
    metadata). ValueError naming `key` otherwise, ending with `where` (the folder's role)."""
    if not name.endswith(".faiss") or Path(name).name != name or name.startswith("."):
        raise ValueError(
            f"{key}={name}: give a file name ending in .faiss (no folder, e.g. {key}=ivf.faiss); "
            f"{where}"
        )
    return name


def script_help(argv: Sequence[str], doc: str | None, keys: Sequence[str]) -> str | None:
    """The help of a ``key=value`` script when `argv` asks for it (``-h`` or ``--help``): its
    docstring (`doc`) and the keys it accepts; None otherwise."""
    if not any(arg in ("-h", "--help") for arg in argv):
        return None
    return f"{(doc or '').strip()}\n\nkeys: {', '.join(keys)}"
