"""The model file: round trips through paths and open file objects; damaged files refused."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS

from .reference import random_matrix


def test_save_load_round_trip(tmp_path):
    matrix = sp.csr_matrix(random_matrix(seed=8))
    model = ALS(n_factors=6, iterations=2, weighting="explicit").fit(matrix)
    model.user_ids = np.array([f"u{i}" for i in range(model.n_users)])
    path = model.save(tmp_path / "model.npz")
    loaded = ALS.load(path)
    assert loaded.params == model.params
    assert loaded.history == model.history
    assert loaded.global_bias == model.global_bias
    np.testing.assert_array_equal(loaded.user_ids, model.user_ids)
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        assert torch.equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.predict([0, 1], [2, 3]), model.predict([0, 1], [2, 3]))


def test_load_rejects_missing_fields_and_unknown_versions(tmp_path):
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=9)))
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = dict(data)
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "item_factors"})
    with pytest.raises(ValueError, match=r"missing.*item_factors"):
        ALS.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "future.npz", **{**arrays, "format_version": np.array(99)})
    with pytest.raises(ValueError, match="format version 99"):
        ALS.load(tmp_path / "future.npz")
    np.savez(tmp_path / "pickled.npz", params=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        ALS.load(tmp_path / "pickled.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a recsys ALS model"):
        ALS.load(tmp_path / "junk.npz")


def _saved_arrays(tmp_path) -> dict[str, np.ndarray]:
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=9)))
    with np.load(model.save(tmp_path / "m.npz")) as data:
        return dict(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"item_factors": np.zeros((40, 2), np.float32)}, r"item_factors has shape \(40, 2\)"),
        ({"user_factors": np.full((50, 3), np.nan, np.float32)}, "NaN or infinite"),
        ({"item_bias": np.zeros(7, np.float32)}, r"item_bias has shape \(7,\)"),
        ({"user_factors": np.zeros((50, 3), np.int64)}, "dtype int64"),
        ({"params": np.array('{"n_factors": 999}')}, r"user_factors has shape \(50, 3\)"),
        ({"params": np.array("{not json")}, "'params' is not valid JSON"),
        ({"params": np.array('{"n_factors": 3, "colour": 1}')}, "not valid ALS arguments"),
        ({"global_bias": np.array([1.0, 2.0])}, "global_bias must be a scalar"),
    ],
)
def test_load_rejects_inconsistent_files(tmp_path, change, message):
    arrays = _saved_arrays(tmp_path)
    if "params" in change and "999" in str(change["params"]):
        params = json.loads(str(arrays["params"]))
        change = {"params": np.array(json.dumps({**params, "n_factors": 999}))}
    np.savez(tmp_path / "bad.npz", **{**arrays, **change})
    with pytest.raises(ValueError, match=message) as info:
        ALS.load(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value) and "\n" not in str(info.value)


def test_load_rejects_truncated_empty_and_object_files(tmp_path):
    arrays = _saved_arrays(tmp_path)
    whole = (tmp_path / "m.npz").read_bytes()
    cases = {
        "truncated.npz": whole[: len(whole) // 2],
        "cut.npz": whole[:-10],
        "empty.npz": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "objects.npz", **{**arrays, "user_ids": np.array([{}] * 50, object)})
    for name in [*cases, "objects.npz"]:
        with pytest.raises(ValueError, match="not a recsys ALS model file") as info:
            ALS.load(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


def _equal_models(a: ALS, b: ALS) -> None:
    assert a.params == b.params and a.history == b.history
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_save_and_load_through_open_binary_files(tmp_path):
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=12)))
    buffer = io.BytesIO()
    assert model.save(buffer) is None  # written into the file object, which stays open
    buffer.seek(0)
    _equal_models(ALS.load(buffer), model)
    with open(tmp_path / "m.npz", "wb") as fh:
        fh.write(b"header")  # written at the file's position, read back from it
        model.save(fh)
    with open(tmp_path / "m.npz", "rb") as fh:
        fh.seek(len(b"header"))
        _equal_models(ALS.load(fh), model)
        assert not fh.closed
    with pytest.raises(ValueError, match="not a recsys ALS model file"):
        ALS.load(tmp_path / "m.npz")  # a path is read from its start: the header is in the way


def test_text_files_empty_buffers_and_npy_files_are_refused(tmp_path):
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=12)))
    with open(tmp_path / "text.npz", "w") as fh, pytest.raises(ValueError, match="text mode"):
        model.save(fh)
    with open(tmp_path / "text.npz", "w+") as fh, pytest.raises(ValueError, match="'rb'"):
        ALS.load(fh)
    with pytest.raises(ValueError, match="the BytesIO is not a recsys ALS model file"):
        ALS.load(io.BytesIO())
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"one.npy is not a recsys ALS model file.*\.npy") as info:
        ALS.load(tmp_path / "one.npy")
    assert "\n" not in str(info.value)
