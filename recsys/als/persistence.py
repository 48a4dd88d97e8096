"""The model file: one self-describing `.npz` (no pickle), written atomically to a path or into
an open binary file object.

It holds the format version, the constructor arguments (`ALS.params`, JSON), the history, the
global mean, the factors and biases, the external ids and, after posterior sampling, its
settings. Loading never executes code from the file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch

from recsys.als.protocol import FactorModel
from recsys.io import atomic_path

M = TypeVar("M", bound=FactorModel)
#: where a model is saved to or loaded from: a path, or an open binary file object
ModelFile = str | os.PathLike | IO[bytes]

#: version of the file layout written by `save_model`; `load_model` rejects any other
FORMAT_VERSION = 1


def file_object(target: ModelFile) -> IO[bytes] | None:
    """`target` when it is an open file object (binary: a text one is refused), else None."""
    if not hasattr(target, "read") and not hasattr(target, "write"):
        return None
    if isinstance(target, io.TextIOBase):
        raise ValueError(
            f"{describe(target)} is opened in text mode; model files are binary: open it with "
            "'wb' to save or 'rb' to load, or pass a path"
        )
    return target


def describe(source: ModelFile) -> str:
    """How messages name a model file: its path, or the file object's name when it has one."""
    if isinstance(source, str | os.PathLike):
        return str(source)
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str | os.PathLike) else f"the {type(source).__name__}"


def save_model(model: FactorModel, target: ModelFile) -> Path | None:
    """Write a fitted `model` to a path, atomically (returns the path), or into an open binary
    file object at its position (returns None; not atomic, left open)."""
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
    fh = file_object(target)
    if fh is not None:
        np.savez(fh, **arrays)
        return None
    path = Path(target)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, **arrays)
    return path


#: the arrays every model file holds
REQUIRED = ("format_version", "params", "history", "global_bias", "user_factors", "item_factors")


def _read_arrays(source: ModelFile, path: str) -> dict[str, np.ndarray]:
    """Every array of the `.npz` in `source` (named `path` in messages), read now (np.load reads
    members lazily, so a truncated member or an object array would otherwise fail later,
    mid-load)."""
    file_object(source)  # refuses a text-mode file before numpy reads str from it
    try:
        data = np.load(source, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (.npy), not an archive of them")
        with data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no model file at {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(
            f"{path} is not a recsys ALS model file (.npz): {reason.rstrip('.')}; "
            "save the model again (ALS.save) or train it again"
        ) from None


def _json(path: str, arrays: dict[str, np.ndarray], name: str, kind: type) -> Any:
    try:
        value = json.loads(str(arrays[name]))
    except ValueError as err:
        raise ValueError(f"{path}: field {name!r} is not valid JSON ({err})") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path}: field {name!r} must hold a JSON {kind.__name__}")
    return value


def _check_tables(path: str, arrays: dict[str, np.ndarray], width: int, use_bias: bool) -> None:
    """Refuse factor tables and biases of the wrong shape, dtype or with non-finite values."""
    for name in ("user_factors", "item_factors", "user_bias", "item_bias", "global_bias"):
        if name not in arrays:
            continue
        value = arrays[name]
        if value.dtype.kind != "f":
            raise ValueError(f"{path}: {name} has dtype {value.dtype}, expected floats")
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: {name} holds NaN or infinite values; train the model again")
    for name in ("user_factors", "item_factors"):
        shape = arrays[name].shape
        if len(shape) != 2 or shape[1] != width:
            raise ValueError(
                f"{path}: {name} has shape {shape}, expected (rows, {width}) from its n_factors "
                "(and posterior samples); the file is inconsistent: save or train it again"
            )
    if arrays["global_bias"].shape != ():
        raise ValueError(f"{path}: global_bias must be a scalar")
    sides = (("user", "user_factors"), ("item", "item_factors"))
    for side, table in sides:
        rows = arrays[table].shape[0]
        for name in (f"{side}_bias", f"{side}_ids") if use_bias else (f"{side}_ids",):
            if name in arrays and arrays[name].shape != (rows,):
                raise ValueError(
                    f"{path}: {name} has shape {arrays[name].shape}, expected ({rows},) like "
                    f"{table}; the file is inconsistent: save or train it again"
                )


def load_model(cls: Callable[..., M], source: ModelFile, device: str) -> M:
    """Read a file written by :func:`save_model` (a path or an open binary file object, read
    from its position) onto `device` as a `cls` model.

    Every array is checked before the model is built: shapes agree with each other and with
    `n_factors`, tables are finite floats, and the JSON fields parse; a damaged or inconsistent
    file is one ValueError naming it.
    """
    path = describe(source)
    arrays = _read_arrays(source, path)
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise ValueError(f"{path} is not a complete recsys ALS model: missing {missing}")
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise ValueError(
            f"{path} has model format version {version}; this recsys reads version "
            f"{FORMAT_VERSION} (re-save it with a matching recsys version)"
        )
    params = _json(path, arrays, "params", dict)
    history = _json(path, arrays, "history", list)
    posterior = _json(path, arrays, "posterior", dict) if "posterior" in arrays else None
    use_bias = bool(params.get("use_bias"))
    if use_bias and not {"user_bias", "item_bias"} <= set(arrays):
        raise ValueError(f"{path} says use_bias=True but holds no biases")
    try:
        model = cls(device=device, **params)
        samples = 1 if posterior is None else int(posterior["samples"])
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: its settings are not valid ALS arguments: {err}") from None
    _check_tables(path, arrays, model.n_factors * samples, use_bias)
    to = lambda a: torch.from_numpy(np.array(a)).to(model.device, model.dtype)  # noqa: E731
    model.user_factors, model.item_factors = to(arrays["user_factors"]), to(arrays["item_factors"])
    if use_bias:
        model.user_bias, model.item_bias = to(arrays["user_bias"]), to(arrays["item_bias"])
    model.global_bias = float(arrays["global_bias"])
    model.history = history
    model.posterior = posterior
    model.user_ids = arrays.get("user_ids")
    model.item_ids = arrays.get("item_ids")
    return model
