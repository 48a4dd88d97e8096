"""Training checkpoints in a run folder, and the config a resumed run continues with.

Resuming (``cfg.resume`` or ``cfg.run_dir``) continues from the newest checkpoint with the
configuration saved in it; the command may change only the keys in :data:`RESUME_MUTABLE` (how
the run is shown and stored, not what it computes), and a key it types with another value than
the checkpoint's is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recsys.config import ConfigError, TrainConfig, differing_keys, flatten, to_dict, validate
from recsys.pipeline.artifacts import ArtifactError, atomic_write_json, atomic_write_text, read_json
from recsys.pipeline.job import logger

__all__ = [
    "RESULT_NEUTRAL",
    "RESUME_MUTABLE",
    "Checkpointer",
    "check_same_settings",
    "resumed_config",
]

#: Keys that change how a run is shown, run or stored, not what it computes: a completed run
#: answers a command that differs from it in these only.
RESULT_NEUTRAL = (
    "resume",
    "run_dir",
    "progress",
    "save_train",
    "checkpoint",
    "tracking",
    "als.device",
    "als.distributed",
    "als.distributed_timeout_s",
)
#: Keys a resumed run may change; everything else must match the checkpoint's configuration.
#: ``index`` is built after training from the trained model, so a run whose index settings
#: failed is finished with other ones.
RESUME_MUTABLE = (*RESULT_NEUTRAL, "index")


class Checkpointer:
    """Atomic training checkpoints in ``<run dir>/checkpoints``.

    Each checkpoint is a folder ``epoch-NNNNN`` with ``model.npz`` (the factors after that
    epoch, ``ALS.save``), optionally ``best.npz`` (the best evaluated factors so far, when they
    are from an earlier epoch) and ``state.json`` (early-stopping state, evaluations, the
    resolved config, elapsed seconds). It is written under a temporary name and renamed into
    place; then the one-line file ``LATEST`` is replaced atomically to point at it, and folders
    older than the previous checkpoint are removed. A kill at any moment leaves ``LATEST`` naming a
    complete checkpoint (or no ``LATEST`` at all), and a newest checkpoint damaged later (a bad
    disk, a stray edit) still leaves the previous one to resume from.
    """

    #: checkpoints kept: the newest and the one before it, to fall back to
    KEEP = 2

    def __init__(self, folder: str | os.PathLike[str], required: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        #: keys a readable ``state.json`` must hold (one without them is skipped like a corrupt one)
        self.required = tuple(required)

    @property
    def latest_file(self) -> Path:
        return self.folder / "LATEST"

    def save(self, epoch: int, model: Any, best: Any | None, state: Mapping[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}"
        final = self.folder / name
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{name}."))
        try:
            model.save(tmp / "model.npz")
            if best is not None:
                best.save(tmp / "best.npz")
            atomic_write_json(tmp / "state.json", dict(state))
            if final.exists():  # an older save of this epoch (e.g. a damaged one resumed past)
                final.rename(tmp.with_suffix(".replaced"))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(self.latest_file, name + "\n")
        previous = [f for f in self.folders() if f.name < name][: self.KEEP - 1]
        for other in self.folder.iterdir():
            if other.is_dir() and other != final and other not in previous:
                shutil.rmtree(other, ignore_errors=True)
        return final

    def latest(self) -> Path | None:
        """The folder of the newest complete checkpoint, or None."""
        if not self.latest_file.is_file():
            return None
        folder = self.folder / self.latest_file.read_text().strip()
        return folder if (folder / "state.json").is_file() else None

    def folders(self) -> list[Path]:
        """Every checkpoint folder, the newest first (each complete: it is renamed into place
        whole, so one is usable even when ``LATEST`` is lost)."""
        return sorted(self.folder.glob("epoch-*"), reverse=True) if self.folder.is_dir() else []

    def load(self, device: str = "cpu") -> tuple[Any, Any | None, dict[str, Any]] | None:
        """``(model, best_or_None, state)`` from the newest readable checkpoint, or None when
        there is none. An unreadable one (a corrupt file) is skipped with a warning naming it;
        ArtifactError (one line) when checkpoints exist and none is readable."""
        problems = []
        for folder in self.folders():
            try:
                return self._load_folder(folder, device)
            except (ArtifactError, OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                problems.append(f"{folder.name}: {' '.join(str(err).split())}")
                logger.warning("checkpoint %s is unreadable (%s); trying an older one", folder, err)
        if problems:
            raise ArtifactError(
                f"no readable checkpoint in {self.folder} ({'; '.join(problems)}); delete "
                f"{self.folder} to train from the start"
            )
        return None

    def _load_folder(self, folder: Path, device: str) -> tuple[Any, Any | None, dict[str, Any]]:
        from recsys.als import ALS

        state = read_json(folder / "state.json")
        if not isinstance(state, dict) or not set(self.required) <= state.keys():
            raise ArtifactError(f"{folder / 'state.json'} lacks {' / '.join(self.required)}")
        model = ALS.load(folder / "model.npz", device=device)
        best = (
            ALS.load(folder / "best.npz", device=device)
            if (folder / "best.npz").is_file()
            else None
        )
        return model, best, state

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_same_settings(
    conf: TrainConfig,
    saved: dict[str, Any],
    overrides: Sequence[str] | None,
    out: Path,
    *,
    mutable: Sequence[str] = RESULT_NEUTRAL,
    source: str = "completed run",
) -> None:
    """Raise ConfigError (one line, the first five keys) when the command asks for other
    settings than `saved` (the config of the run in `out`, or of its checkpoint) outside
    `mutable`: with `overrides` (the command line) only the keys typed there count, with None
    every key of `conf` does. A completed run's result answers only the command it ran."""
    current = to_dict(conf)
    conflicts = _resume_conflicts(saved, current, overrides, mutable)
    if conflicts:
        was, now = flatten(saved), flatten(current)
        shown = ", ".join(
            f"{k} ({source} {was.get(k)!r}, now {now.get(k)!r})" for k in conflicts[:5]
        )
        raise ConfigError(
            f"cannot resume {out}: the command asks for other settings than its {source}: "
            f"{shown}; drop those overrides (a resumed run keeps its config) or start a new run"
        )


def resumed_config(
    conf: TrainConfig, saved: dict[str, Any], overrides: Sequence[str] | None, out: Path
) -> TrainConfig:
    """The checkpoint's config `saved` with the :data:`RESUME_MUTABLE` keys of `conf`.

    Raises ConfigError (:func:`check_same_settings`) when the command asks for other settings.
    """
    check_same_settings(conf, saved, overrides, out, mutable=RESUME_MUTABLE, source="checkpoint")
    current = to_dict(conf)
    mutable = {k: v for k, v in flatten(current).items()
               if any(k == m or k.startswith(m + ".") for m in RESUME_MUTABLE)}  # fmt: skip
    merged = {**flatten(saved), **mutable}
    return validate(_unflatten(merged))


def _override_keys(overrides: Sequence[str]) -> list[str]:
    keys = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("~+")
        keys.append(key.split("@", 1)[0])
    return keys


def _resume_conflicts(
    saved: dict[str, Any],
    current: dict[str, Any],
    overrides: Sequence[str] | None,
    mutable: Sequence[str],
) -> list[str]:
    """Keys outside `mutable` where the current command asks for something else than `saved`."""
    diff = differing_keys(saved, current, ignore=mutable)
    if overrides is None:
        return diff
    typed = [k for k in _override_keys(overrides) if not k.startswith("hydra")]

    def covered(d: str) -> bool:
        return any(k == "experiment" or d == k or d.startswith(k + ".") for k in typed)

    return [d for d in diff if covered(d)]


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested
