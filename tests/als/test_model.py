"""The model: fold-in, partial fits, persistence, argument checks, scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS

from .reference import (
    brute_force_top,
    half_step,
    random_matrix,
)


def test_fold_in_of_a_training_user_reproduces_its_vector():
    dense = random_matrix(seed=4)
    model = ALS(n_factors=10, regularization=0.1, weighting="hkv", alpha=3.0, iterations=3)
    model.fit(sp.csr_matrix(dense))
    # one more user half-step makes the stored user vectors the exact solution for the item side
    half_step(model, "users", sp.csr_matrix(dense))
    rows = sp.csr_matrix(dense[[5, 7, 11]])
    factors, bias = model.fold_in_factors(rows)
    assert torch.allclose(factors, model.user_factors[[5, 7, 11]], rtol=1e-5, atol=1e-6)
    assert torch.allclose(bias, model.user_bias[[5, 7, 11]], rtol=1e-5, atol=1e-6)
    embeddings = model.fold_in(rows)
    np.testing.assert_allclose(embeddings, model.user_embeddings([5, 7, 11]), rtol=1e-5, atol=1e-6)


def test_partial_fit_users_updates_and_adds_users():
    dense = random_matrix(seed=5)
    model = ALS(n_factors=6, regularization=0.1, iterations=2).fit(sp.csr_matrix(dense))
    n = model.n_users
    new_row = sp.csr_matrix(dense[[2]])
    model.partial_fit_users([n + 1], new_row)
    assert model.n_users == n + 2
    assert torch.count_nonzero(model.user_factors[n]) == 0  # the gap is a zero row
    factors, _ = model.fold_in_factors(new_row)
    assert torch.allclose(model.user_factors[n + 1], factors[0])
    # the items' side: re-solving item 0 from its column equals a full item half-step
    grown = sp.vstack([sp.csr_matrix(dense), sp.csr_matrix((1, dense.shape[1])), new_row]).tocsr()
    model.partial_fit_items([0], grown[:, [0]].T.tocsr())
    expected = model.item_factors.clone()
    half_step(model, "items", grown)
    assert torch.allclose(expected[0], model.item_factors[0], rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_factors": 0}, "n_factors must be >= 1"),
        ({"n_factors": 2.5}, "n_factors must be an integer"),
        ({"regularization": -0.1}, "regularization must be >= 0"),
        ({"solver": "lu"}, "unknown solver 'lu'; choose one of: cg, cholesky"),
        ({"weighting": "bpr"}, "unknown weighting 'bpr'; choose one of: explicit, hkv, ials"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"alpha": -1.0}, "alpha must be >= 0"),
        ({"cg_steps": 0, "solver": "cg"}, "cg_steps must be >= 1"),
        ({"use_bias": True, "regularization": 0.0}, "use_bias=True needs regularization > 0"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ALS(**kwargs)


def test_bad_inputs_raise_clear_errors():
    dense = random_matrix(seed=10)
    with pytest.raises(ValueError, match="CSR"):
        ALS(n_factors=3).fit(dense)
    with pytest.raises(ValueError, match="CSR"):
        ALS(n_factors=3).fit(sp.coo_matrix(dense))
    negative = sp.csr_matrix(-dense)
    with pytest.raises(ValueError, match="needs them >= 0"):
        ALS(n_factors=3, weighting="hkv").fit(negative)
    with pytest.raises(ValueError, match="needs them >= 0"):
        ALS(n_factors=3, weighting="ials").fit(negative)
    ALS(n_factors=3, weighting="explicit", iterations=1).fit(negative)  # signed ratings are fine
    nan = sp.csr_matrix(dense)
    nan.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ALS(n_factors=3).fit(nan)
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(dense))
    with pytest.raises(ValueError, match="columns"):
        model.fold_in_factors(sp.csr_matrix(np.ones((2, 5))))
    with pytest.raises(IndexError, match="user ids"):
        model.predict([10_000], [0])
    with pytest.raises(RuntimeError, match="not fitted"):
        ALS().item_embeddings()


def test_recommend_matches_brute_force_with_filters():
    dense = random_matrix(seed=14)
    matrix = sp.csr_matrix(dense)
    model = ALS(n_factors=6, iterations=3, weighting="hkv", use_bias=True).fit(matrix)
    users = np.array([0, 5, 9, 3])
    scores = (
        model.user_factors.double().numpy()[users] @ model.item_factors.double().numpy().T
        + model.item_bias.double().numpy()[None, :]
        + model.user_bias.double().numpy()[users, None]
    )
    np.testing.assert_allclose(
        model.predict(np.repeat(users, model.n_items), np.tile(np.arange(model.n_items), 4)),
        scores.ravel(),
        rtol=1e-5,
        atol=1e-5,
    )
    banned = np.array([1, 2, 30])
    masked = scores.copy()
    masked[dense[users] != 0] = -np.inf
    masked[:, banned] = -np.inf
    ids, got = model.recommend(users, matrix[users], k=10, filter_items=banned)
    np.testing.assert_array_equal(ids, brute_force_top(masked, 10))
    np.testing.assert_allclose(got, np.take_along_axis(scores, ids, 1), rtol=1e-5, atol=1e-5)
    subset = np.arange(0, 40, 3)
    ids, _ = model.recommend(users, k=5, filter_seen=False, items=subset)
    only = np.full_like(scores, -np.inf)
    only[:, subset] = scores[:, subset]
    np.testing.assert_array_equal(ids, brute_force_top(only, 5))
    with pytest.raises(ValueError, match="one row per user id"):
        model.recommend(users, matrix, k=5)


def test_similar_items_are_cosine_neighbours_without_the_item_itself():
    model = ALS(n_factors=5, iterations=2).fit(sp.csr_matrix(random_matrix(seed=15)))
    y = model.item_factors.double().numpy()
    unit = y / np.linalg.norm(y, axis=1, keepdims=True)
    cosine = unit[[4, 8]] @ unit.T
    cosine[0, 4] = cosine[1, 8] = -np.inf
    ids, scores = model.similar_items([4, 8], k=6)
    np.testing.assert_array_equal(ids, brute_force_top(cosine, 6))
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, ids, 1), rtol=1e-5)


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


@pytest.mark.parametrize("bad", [[1.7], [np.nan], [True], ["1"], np.array([0.5, 2.0]), [1e20]])
def test_non_integer_ids_are_refused_not_truncated(bad):
    dense = random_matrix(seed=3)
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(dense))
    calls = [
        lambda: model.recommend(bad, filter_seen=False),
        lambda: model.recommend([0], filter_seen=False, items=bad),
        lambda: model.recommend([0], filter_seen=False, filter_items=bad),
        lambda: model.predict(bad, [0] * len(bad)),
        lambda: model.predict([0] * len(bad), bad),
        lambda: model.similar_items(bad),
        lambda: model.user_embeddings(bad),
        lambda: model.partial_fit_users(bad, sp.csr_matrix(dense[: len(bad)])),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="ids must be integer internal indices") as info:
            call()
        assert "\n" not in str(info.value)


def test_whole_float_ids_still_work():
    model = ALS(n_factors=3, iterations=1).fit(sp.csr_matrix(random_matrix(seed=3)))
    np.testing.assert_array_equal(
        model.predict(np.array([1.0, 2.0]), np.array([3.0, 4.0])), model.predict([1, 2], [3, 4])
    )
