"""The files of a run folder: their names, atomic writes, and the leftovers of a killed run.

Every artifact is written atomically (temp file + ``os.replace``), the model first and
``metrics.json`` last, so a killed run never leaves a half-written file and a run folder with
``metrics.json`` is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator
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
    "PLOT_FILES",
    "REPORT_FILE",
    "TB_DIR",
    "TRAIN_FILE",
    "ArtifactError",
    "artifact_paths",
    "atomic_write_json",
    "atomic_write_text",
    "lock_run_folder",
    "read_json",
    "remove_stale_temporaries",
]

MODEL_FILE = "model.npz"
TRAIN_FILE = "train.npz"
INDEX_FILE = "items.faiss"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
TB_DIR = "tb"
REPORT_FILE = "report.md"
#: the report's plots (:mod:`recsys.pipeline.report`), by name
PLOT_FILES = {
    "loss": "loss.png",
    "validation": "validation.png",
    "factor_norms": "factor_norms.png",
    "long_tail": "long_tail.png",
    "scores": "scores.png",
}
CHECKPOINT_DIR = "checkpoints"


class ArtifactError(ValueError):
    """A run folder's file that cannot be used (unreadable JSON, a folder in use); the message
    is one line naming the file and what to do."""


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
    names = (MODEL_FILE, TRAIN_FILE, INDEX_FILE, INDEX_FILE + ".json", METRICS_FILE, METADATA_FILE,
             REPORT_FILE, *PLOT_FILES.values())  # fmt: skip
    for path in out.glob(".*"):
        if path.is_file() and any(path.name.startswith(f".{n}.") for n in names):
            path.unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    """The JSON in `path`; ArtifactError naming the file when it is not valid JSON (a bare
    ``Expecting value: line 2 column 1`` says nothing about which file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(
            f"{path} is not valid JSON ({err}); restore it or train into a new run folder"
        ) from None


@contextlib.contextmanager
def lock_run_folder(out: Path) -> Iterator[None]:
    """Create the run folder `out` and hold an exclusive lock on it while the block runs.

    ``flock`` on the folder itself: no lock file to leave behind, and the OS releases the lock
    when the process dies (even by ``kill -9``), so a killed run never blocks the next one. A
    second run into a busy folder fails at once (ArtifactError) instead of interleaving its
    checkpoints and artifacts with the first's.
    """
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(
                f"{out} is in use by another run; wait for it to finish or train into another "
                "folder (hydra.run.dir)"
            ) from None
        yield
    finally:
        os.close(fd)
