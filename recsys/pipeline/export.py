"""The export stage: the model, the training interactions and the Faiss index of the item
embeddings, each written atomically into the run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recsys.config import ConfigError, TrainConfig
from recsys.pipeline.artifacts import artifact_paths
from recsys.pipeline.data import Prepared

__all__ = ["EXPORTED", "check_index", "export_index", "export_model"]

#: the artifacts :func:`export_model` writes (none of them with ``export=false``)
EXPORTED = ("model", "train", "index", "index_sidecar")


def check_index(conf: TrainConfig, n_items: int) -> None:
    """Check ``conf.index`` against the data's `n_items` items before training, so a setting
    the data cannot take (``index.nlist`` above the item count, ``index.nprobe`` above the
    lists, ``index.shards``) fails before the model is trained, not after (ConfigError)."""
    from recsys.index.builder import check_settings

    ix = conf.index
    try:
        check_settings(
            ix.type, n_items, nlist=ix.nlist, nprobe=ix.nprobe, hnsw_m=ix.M,
            ef_construction=ix.ef_construction, ef_search=ix.ef_search, factory=ix.factory,
            shards=ix.shards,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(
            f"index (type {ix.type}) does not fit the data's {n_items} items: {err}; change "
            "index.nlist / index.nprobe / index.shards (null nlist and nprobe take defaults "
            "from the data)"
        ) from None


def export_index(
    model: Any, conf: TrainConfig, path: Path, *, model_path: Path | None = None
) -> dict[str, Any]:
    """Build the configured Faiss index over the model's item embeddings and save it atomically.

    Returns a short description for metadata.json. Settings Faiss cannot build (a factory
    string it cannot parse, more lists than items) raise ConfigError naming ``index``, in one
    line instead of Faiss's C++ trace.
    """
    from recsys.index import save_index

    ix = conf.index
    try:
        index = _build(model, conf)
    except (ValueError, RuntimeError) as err:  # Faiss reports bad settings as RuntimeError
        reason = " ".join(str(err).split()).split("failed: ")[-1]
        setting = f"factory {ix.factory!r}" if ix.type == "factory" else f"type {ix.type}"
        raise ConfigError(
            f"index ({setting}) cannot be built over the {model.n_items} items: {reason}; "
            "change index.* (a resume, run_dir=<this run>, may change them)"
        ) from None
    sidecar = save_index(index, path, model_path=model_path)
    return {
        "file": path.name,
        "sidecar": sidecar.name,
        "type": ix.type,
        "metric": ix.metric,
        "shards": index.shards,
        "description": repr(index),
    }


def _build(model: Any, conf: TrainConfig) -> Any:
    from recsys.index import build_index_from_model

    ix = conf.index
    return build_index_from_model(
        model,
        ix.type,
        ix.metric,
        nlist=ix.nlist,
        nprobe=ix.nprobe,
        hnsw_m=ix.M,
        ef_construction=ix.ef_construction,
        ef_search=ix.ef_search,
        factory=ix.factory,
        mips_to_l2=ix.mips_to_l2,
        device="gpu" if ix.gpu else "cpu",
        item_ids=model.item_ids,
        seed=conf.seed,
        shards=ix.shards,
    )


def export_model(
    model: Any, conf: TrainConfig, data: Prepared, out: Path
) -> tuple[dict[str, Path], dict[str, Any] | None, float]:
    """Write ``model.npz``, ``train.npz`` (when ``save_train``) and the index into `out`
    (nothing with ``export=false``).

    Returns the run folder's artifact paths (without those not written), the index's
    description (None without an index) and the seconds the index took to build and save.
    """
    artifacts = artifact_paths(out)
    if not conf.export:
        for name in EXPORTED:
            del artifacts[name]
        return artifacts, None, 0.0
    model.save(artifacts["model"])  # ALS.save writes atomically
    if conf.save_train:
        data.train.save(artifacts["train"])  # atomic too: seen items, ids, titles
    else:
        del artifacts["train"]
    t_index = time.perf_counter()
    index_info = export_index(model, conf, artifacts["index"], model_path=artifacts["model"])
    return artifacts, index_info, time.perf_counter() - t_index
