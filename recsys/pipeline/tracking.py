"""TensorBoard logging for one training job: losses, metrics, embedding distributions, projector.

One :class:`Tracker` owns one ``SummaryWriter`` writing under ``<run dir>/tb``; close it at the end
of the job (it is a context manager) so that sweeps, which run many jobs in one process, never
share or leak writers. What it writes:

- scalars per epoch: ``loss/total`` and its components ``loss/observed``, ``loss/unobserved``,
  ``loss/regularization``; ``time/epoch_seconds``;
- scalars per evaluation: ``validation/<metric>`` (e.g. ``validation/recall@20``) and, at the end,
  ``test/<metric>``;
- histograms per epoch: ``factors/user_norm``, ``factors/item_norm``, ``bias/user``, ``bias/item``;
- the projector: the final item embeddings (the most popular items first, capped), with id, title
  and popularity as metadata;
- hparams: one session per job in the nested run ``hparams`` (a fixed name, so no stray
  timestamped runs), its hyperparameters plain Python scalars and its final metrics under
  ``hparam/<metric>``.

No Hydra here: the pipeline passes plain values in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

__all__ = ["HPARAMS_RUN", "LOSS_TAGS", "Tracker", "loss_parts", "plain_hparams"]

#: Name of the nested run holding the hparams session (fixed, see module docstring).
HPARAMS_RUN = "hparams"

#: scalar tag -> the keys of an ``ALS.history`` entry it may come from (the first one present).
LOSS_TAGS = {
    "loss/total": ("loss",),
    "loss/observed": ("observed", "loss_observed"),
    "loss/unobserved": ("unobserved", "loss_unobserved"),
    "loss/regularization": ("regularization", "loss_regularization"),
}


def loss_parts(entry: Mapping[str, Any]) -> dict[str, float]:
    """``{tag: value}`` of the :data:`LOSS_TAGS` an ``ALS.history`` entry holds as a finite
    number (NaN: the loss was not computed that epoch)."""
    out = {}
    for tag, keys in LOSS_TAGS.items():
        key = next((k for k in keys if entry.get(k) is not None), None)
        if key is not None and math.isfinite(float(entry[key])):
            out[tag] = float(entry[key])
    return out


def plain_hparams(values: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The hparams TensorBoard accepts: bool, int, float, str; None and lists become strings."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool | int | str):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        elif value is None:
            out[key] = "null"
        elif isinstance(value, list | tuple):
            out[key] = "[" + ",".join(str(v) for v in value) + "]"
        else:
            out[key] = str(value)
    return out


def _clean_label(text: Any) -> str:
    """A projector metadata cell: no tabs or newlines (they would break metadata.tsv)."""
    return " ".join(str(text).split()) or "-"


class Tracker:
    """Writes a training job's TensorBoard events under `log_dir` (``<run dir>/tb``).

    Args:
        log_dir: folder for the event files (created when needed).
        enabled: False turns every method into a no-op and creates no file.
        histograms: log factor norms and biases in :meth:`log_factors`.
        projector: write embeddings in :meth:`log_projector`.
        projector_max_items: at most this many items go into the projector.
        hparams: write the hparams session in :meth:`log_hparams`.
        purge_step: when a resumed run restarts at this step, TensorBoard hides the events
            at or after it that the interrupted run wrote (see ``SummaryWriter``).
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        enabled: bool = True,
        histograms: bool = True,
        projector: bool = True,
        projector_max_items: int = 2000,
        hparams: bool = True,
        purge_step: int | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.histograms = histograms
        self.projector = projector
        self.projector_max_items = int(projector_max_items)
        self.hparams = hparams
        self._writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(
                log_dir=str(self.log_dir), flush_secs=30, purge_step=purge_step
            )

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._writer is None

    def close(self) -> None:
        """Flush and close the writer; safe to call twice."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------ scalars
    def log_epoch(self, entry: Mapping[str, Any], step: int | None = None) -> None:
        """Per-epoch loss (and components present in `entry`) and seconds, at `step` (epoch)."""
        if self._writer is None:
            return
        step = int(entry.get("epoch", 0)) if step is None else int(step)
        for tag, value in loss_parts(entry).items():
            self._writer.add_scalar(tag, value, step)
        if entry.get("seconds") is not None:
            self._writer.add_scalar("time/epoch_seconds", float(entry["seconds"]), step)

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int, prefix: str = "validation"
    ) -> None:
        """Scalars ``<prefix>/<name>`` for every finite number in `metrics`."""
        if self._writer is None:
            return
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                continue
            if math.isfinite(float(value)):
                self._writer.add_scalar(f"{prefix}/{name}", float(value), int(step))

    # ------------------------------------------------------------------ histograms
    def log_factors(
        self,
        step: int,
        user_factors: torch.Tensor | np.ndarray | None,
        item_factors: torch.Tensor | np.ndarray | None,
        user_bias: torch.Tensor | np.ndarray | None = None,
        item_bias: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Histograms of the user / item factor norms and of the biases (when present)."""
        if self._writer is None or not self.histograms:
            return
        for tag, factors in (
            ("factors/user_norm", user_factors),
            ("factors/item_norm", item_factors),
        ):
            if factors is not None and len(factors):
                norms = torch.as_tensor(factors).detach().double().norm(dim=1).cpu().numpy()
                self._writer.add_histogram(tag, norms, int(step))
        for tag, bias in (("bias/user", user_bias), ("bias/item", item_bias)):
            if bias is not None and len(bias):
                values = torch.as_tensor(bias).detach().double().cpu().numpy()
                self._writer.add_histogram(tag, values, int(step))

    # ------------------------------------------------------------------ projector
    def log_projector(
        self,
        embeddings: np.ndarray,
        *,
        item_ids: Sequence[Any] | np.ndarray | None = None,
        titles: Sequence[Any] | np.ndarray | None = None,
        popularity: np.ndarray | None = None,
        step: int = 0,
        tag: str = "item_embeddings",
    ) -> np.ndarray:
        """Item embeddings for the projector, the most popular `projector_max_items` of them.

        Metadata columns: external id, title (when known) and popularity (when known). Returns the
        internal indices of the items written (empty when the projector is off).
        """
        if self._writer is None or not self.projector:
            return np.empty(0, dtype=np.int64)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        n = embeddings.shape[0]
        if popularity is not None:
            order = np.argsort(-np.asarray(popularity), kind="stable")
        else:
            order = np.arange(n)
        chosen = order[: self.projector_max_items].astype(np.int64)
        if chosen.size == 0:
            return chosen
        ids = np.arange(n) if item_ids is None else np.asarray(item_ids)
        header = ["id"]
        columns: list[np.ndarray] = [ids[chosen]]
        if titles is not None:
            header.append("title")
            columns.append(np.asarray(titles)[chosen])
        if popularity is not None:
            header.append("popularity")
            columns.append(np.asarray(popularity)[chosen])
        rows = [[_clean_label(col[r]) for col in columns] for r in range(chosen.size)]
        self._writer.add_embedding(
            torch.from_numpy(embeddings[chosen]),
            metadata=rows,
            metadata_header=header,
            global_step=int(step),
            tag=tag,
        )
        return chosen

    # ------------------------------------------------------------------ hparams
    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """One hparams session (nested run ``hparams``) with final metrics ``hparam/<name>``."""
        if self._writer is None or not self.hparams:
            return
        metric_dict = {
            f"hparam/{name}": float(value)
            for name, value in metrics.items()
            if not isinstance(value, bool)
            and isinstance(value, int | float | np.number)
            and math.isfinite(float(value))
        }
        self._writer.add_hparams(plain_hparams(hparams), metric_dict, run_name=HPARAMS_RUN)
