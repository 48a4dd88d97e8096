"""The model file: one self-describing `.npz` (no pickle), written atomically.

It holds the format version, the constructor arguments (`ALS.params`, JSON), the history, the
global mean, the factors and biases, the external ids and, after posterior sampling, its
settings. Loading never executes code from the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from recsys.als.protocol import FactorModel
from recsys.io import atomic_path

M = TypeVar("M", bound=FactorModel)

#: version of the file layout written by `save_model`; `load_model` rejects any other
FORMAT_VERSION = 1


def save_model(model: FactorModel, path: Path) -> Path:
    """Write a fitted `model` to `path`; returns the path written."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FORMAT_VERSION),
        "params": np.array(json.dumps(model.params)),
        "history": np.array(json.dumps(model.history)),
        "global_bias": np.array(model.global_bias),
        "user_factors": model.user_factors.cpu().numpy(),
        "item_factors": model.item_factors.cpu().numpy(),
    }
    if model.posterior is not None:
        arrays["posterior"] = np.array(json.dumps(model.posterior))
    for name in ("user_bias", "item_bias"):
        if getattr(model, name) is not None:
            arrays[name] = getattr(model, name).cpu().numpy()
    for name in ("user_ids", "item_ids"):
        if getattr(model, name) is not None:
            arrays[name] = getattr(model, name)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_model(cls: Callable[..., M], path: Path, device: str) -> M:
    """Read a file written by :func:`save_model` onto `device` as a `cls` model."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no model file at {path}") from None
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a recsys ALS model file (.npz): {err}") from None
    with data:
        missing = [
            k
            for k in (
                "format_version",
                "params",
                "history",
                "global_bias",
                "user_factors",
                "item_factors",
            )
            if k not in data.files
        ]
        if missing:
            raise ValueError(f"{path} is not a complete recsys ALS model: missing {missing}")
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path} has model format version {version}; this recsys reads version "
                f"{FORMAT_VERSION} (re-save it with a matching recsys version)"
            )
        params = json.loads(str(data["params"]))
        if params["use_bias"] and not {"user_bias", "item_bias"} <= set(data.files):
            raise ValueError(f"{path} says use_bias=True but holds no biases")
        model = cls(device=device, **params)
        to = lambda a: torch.from_numpy(np.array(a)).to(model.device, model.dtype)  # noqa: E731
        model.user_factors, model.item_factors = (
            to(data["user_factors"]),
            to(data["item_factors"]),
        )
        if params["use_bias"]:
            model.user_bias, model.item_bias = to(data["user_bias"]), to(data["item_bias"])
        model.global_bias = float(data["global_bias"])
        model.history = json.loads(str(data["history"]))
        if "posterior" in data.files:
            model.posterior = json.loads(str(data["posterior"]))
        model.user_ids = data["user_ids"] if "user_ids" in data.files else None
        model.item_ids = data["item_ids"] if "item_ids" in data.files else None
    return model
