"""ALS core: exactness against dense float64 references, loss, biases, fold-in, persistence."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.als import ALS, SOLVERS, WEIGHTINGS, DivergenceError
from recsys.als.batching import bucket_growth, build_buckets
from recsys.als.posterior import draw_normal_wishart
from recsys.als.solvers import cholesky as cholesky_module
from recsys.als.solvers.base import HalfProblem
from recsys.als.training import LocalStrategy, half_epoch


def half_step(model: ALS, side: str, matrix: sp.csr_matrix) -> None:
    """One half-epoch of `model` on `matrix` ("users" or "items"), as training runs it."""
    half_epoch(LocalStrategy(model, matrix), side)


def random_matrix(n_users=50, n_items=40, density=0.3, seed=0, empty_user=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density) * rng.integers(1, 6, (n_users, n_items))
    dense[empty_user] = 0
    return dense.astype(np.float64)


def reference_user_systems(model: ALS, dense: np.ndarray) -> dict[int, tuple[np.ndarray, ...]]:
    """Each nonempty user's normal equations (lhs, rhs) in float64, over [x_u, b_u]."""
    y = model.item_factors.double().cpu().numpy()
    n_items, f = y.shape
    use_bias = model.item_bias is not None
    item_bias = model.item_bias.double().cpu().numpy() if use_bias else np.zeros(n_items)
    offsets = item_bias + model.global_bias
    fixed = np.hstack([y, np.ones((n_items, 1))]) if use_bias else y
    lam, lam_b = model.params["regularization"], model.params["bias_regularization"]
    reg_diag = np.r_[np.full(f, lam), [lam_b]] if use_bias else np.full(f, lam)
    a = model.weighting.all_pairs_weight
    systems = {}
    for u, row in enumerate(dense):
        cols = np.flatnonzero(row)
        if cols.size == 0:
            continue
        values = torch.tensor(row[cols])
        d = model.weighting.observed_weight(values).numpy()
        g = model.weighting.observed_target(values).numpy()
        scale = (cols.size + a * n_items) ** model.reg_exponent
        fu = fixed[cols]
        lhs = a * fixed.T @ fixed + fu.T @ (d[:, None] * fu) + scale * np.diag(reg_diag)
        rhs = fu.T @ (g - d * offsets[cols]) - a * fixed.T @ offsets
        systems[u] = (lhs, rhs)
    return systems


def reference_user_update(model: ALS, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve each user's normal equations densely in float64 from the model's item side."""
    f = model.n_factors
    xs, bs = np.zeros((dense.shape[0], f)), np.zeros(dense.shape[0])
    for u, (lhs, rhs) in reference_user_systems(model, dense).items():
        z = np.linalg.solve(lhs, rhs)
        xs[u] = z[:f]
        bs[u] = z[f] if model.item_bias is not None else 0.0
    return xs, bs


def dense_objective(model: ALS, dense: np.ndarray) -> float:
    """The weighted squared error plus regularization, summed over every (user, item) pair."""
    x = model.user_factors.double().numpy()
    y = model.item_factors.double().numpy()
    s = x @ y.T + model.global_bias
    if model.user_bias is not None:
        s += model.user_bias.double().numpy()[:, None] + model.item_bias.double().numpy()[None, :]
    observed = dense != 0
    v = torch.tensor(dense[observed])
    w = model.weighting
    a = w.all_pairs_weight
    d, g, e = (fn(v).numpy() for fn in (w.observed_weight, w.observed_target, w.observed_constant))
    so = s[observed]
    loss = float((d * so**2 - 2 * g * so + e).sum()) + a * float((s**2).sum())
    lam, lam_b = model.params["regularization"], model.params["bias_regularization"]
    nu = model.reg_exponent
    for factors, bias, counts, n_other in (
        (x, model.user_bias, observed.sum(1), dense.shape[1]),
        (y, model.item_bias, observed.sum(0), dense.shape[0]),
    ):
        scale = (counts + a * n_other) ** nu
        loss += lam * float((scale * (factors**2).sum(1)).sum())
        if bias is not None:
            loss += lam_b * float((scale * bias.double().numpy() ** 2).sum())
    return loss


CASES = [
    (weighting, use_bias, n_factors)
    for weighting in ("hkv", "ials", "explicit")
    for use_bias in (False, True)
    for n_factors in (6, 24)  # 6: mostly the direct path; 24: mostly Woodbury (n < f)
]


@pytest.mark.parametrize(("weighting", "use_bias", "n_factors"), CASES)
def test_cholesky_user_update_matches_float64_reference(weighting, use_bias, n_factors):
    assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors)


@pytest.mark.parametrize(
    ("weighting", "use_bias", "n_factors"), [("hkv", True, 6), ("ials", False, 24)]
)
def test_blocked_gram_products_match_float64_reference(monkeypatch, weighting, use_bias, n_factors):
    """Large systems build only the upper blocks of their Gram products; force that path on
    small ones (direct at 6 factors, Woodbury at 24) and check the solves stay exact."""
    monkeypatch.setattr(cholesky_module, "BLOCKED_GRAM_MIN_ROWS", 4)
    calls = []
    original = cholesky_module._gram_upper
    monkeypatch.setattr(
        cholesky_module, "_gram_upper", lambda a, out: calls.append(a.shape) or original(a, out)
    )
    assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors)
    assert any(shape[1] >= 4 for shape in calls)


def assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors, device="cpu"):
    dense = random_matrix()
    model = ALS(
        n_factors=n_factors,
        regularization=0.1,
        bias_regularization=0.05,
        weighting=weighting,
        alpha=2.0,
        alpha0=0.1,
        use_bias=use_bias,
        iterations=2,
        device=device,
    ).fit(sp.csr_matrix(dense))
    xs, bs = reference_user_update(model, dense)
    factors, bias = model.fold_in_factors(sp.csr_matrix(dense))
    assert factors.device.type == device
    assert np.abs(factors.double().cpu().numpy() - xs).max() / np.abs(xs).max() < 1e-5
    if use_bias:
        assert np.abs(bias.double().cpu().numpy() - bs).max() / np.abs(bs).max() < 1e-5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("blocked_gram", [False, True])
@pytest.mark.parametrize(("weighting", "use_bias", "n_factors"), CASES)
def test_cuda_float32_solves_match_float64_reference(
    monkeypatch, weighting, use_bias, n_factors, blocked_gram
):
    """The fit and the solves write into strided workspace views in place: check on CUDA, in
    float32, every path (direct, Woodbury, blocked Gram products) against float64."""
    if blocked_gram:
        monkeypatch.setattr(cholesky_module, "BLOCKED_GRAM_MIN_ROWS", 4)
    assert_fold_in_matches_float64_reference(weighting, use_bias, n_factors, device="cuda")


def test_a_system_that_is_not_positive_definite_fails_the_solve_after_all_chunks_ran():
    """Chunks only flag a failed factorisation (no host sync per chunk); the solve raises."""
    dense = random_matrix(seed=21)
    weighting = WEIGHTINGS.build("explicit")
    buckets, _ = build_buckets(sp.csr_matrix(dense), weighting, torch.device("cpu"), torch.float32)
    fixed = torch.randn(dense.shape[1], 8)
    nan_column = fixed.clone()
    nan_column[7] = float("nan")  # every row that observed column 7 gets a NaN system

    def problem(fixed: torch.Tensor) -> HalfProblem:
        return HalfProblem(
            fixed=fixed,
            all_pairs_weight=weighting.all_pairs_weight,
            offsets=None,
            row_reg=torch.full((dense.shape[0],), 0.1),
            weighting=weighting,
            buckets=buckets,
            memory_budget_bytes=4096,  # many small chunks
        )

    solver = SOLVERS.build("cholesky")
    with pytest.raises(FloatingPointError, match="not positive definite"):
        solver.solve(problem(nan_column), None)
    assert torch.isfinite(solver.solve(problem(fixed), None)[np.flatnonzero(dense.any(1))]).all()


@pytest.mark.parametrize("weighting", ["hkv", "ials", "explicit"])
def test_cg_converges_to_the_exact_solution(weighting):
    dense = random_matrix(seed=1)
    exact = ALS(n_factors=12, regularization=0.1, weighting=weighting, iterations=2, device="cpu")
    exact.fit(sp.csr_matrix(dense))
    cg = ALS(n_factors=12, regularization=0.1, weighting=weighting, solver="cg", cg_steps=40)
    cg.user_factors, cg.item_factors = exact.user_factors.clone(), exact.item_factors.clone()
    cg.user_bias, cg.item_bias = exact.user_bias.clone(), exact.item_bias.clone()
    cg.global_bias = exact.global_bias
    xs, _ = reference_user_update(exact, dense)
    half_step(cg, "users", sp.csr_matrix(dense))
    assert np.abs(cg.user_factors.double().numpy() - xs).max() / np.abs(xs).max() < 1e-3


@pytest.mark.parametrize(
    ("weighting", "use_bias"), [("hkv", True), ("ials", False), ("explicit", True)]
)
def test_loss_is_exact_and_decreases_monotonically(weighting, use_bias):
    dense = random_matrix(seed=2)
    model = ALS(
        n_factors=8, regularization=0.05, weighting=weighting, use_bias=use_bias, iterations=8
    )
    model.fit(sp.csr_matrix(dense))
    losses = [h["loss"] for h in model.history]
    assert len(losses) == 8
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0]
    assert model.history[-1]["loss"] == pytest.approx(dense_objective(model, dense), rel=1e-5)
    parts = model.history[-1]
    total = parts["observed"] + parts["unobserved"] + parts["regularization"]
    assert parts["loss"] == pytest.approx(total)


def test_biases_recover_planted_offsets():
    rng = np.random.default_rng(3)
    n_users, n_items = 300, 200
    user_offset = rng.normal(0, 1.0, n_users)
    item_offset = rng.normal(0, 1.0, n_items)
    mask = rng.random((n_users, n_items)) < 0.2
    ratings = 3.0 + user_offset[:, None] + item_offset[None, :] + rng.normal(0, 0.1, mask.shape)
    matrix = sp.csr_matrix(np.where(mask, ratings, 0.0))
    model = ALS(
        n_factors=2, regularization=0.01, weighting="explicit", use_bias=True, iterations=10
    ).fit(matrix)
    learned_users = model.user_bias.numpy() + model.global_bias - 3.0
    assert np.corrcoef(learned_users, user_offset)[0, 1] > 0.98
    assert np.corrcoef(model.item_bias.numpy(), item_offset)[0, 1] > 0.98
    assert model.global_bias == pytest.approx(ratings[mask].mean())
    rmse = np.sqrt(np.mean((model.predict(*np.nonzero(mask)) - ratings[mask]) ** 2))
    assert rmse < 0.15


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


def test_empty_rows_get_zero_vectors():
    dense = random_matrix(empty_user=3)
    dense[:, 7] = 0
    model = ALS(n_factors=5, regularization=0.1, iterations=2).fit(sp.csr_matrix(dense))
    assert torch.count_nonzero(model.user_factors[3]) == 0
    assert torch.count_nonzero(model.item_factors[7]) == 0
    assert float(model.user_bias[3]) == 0.0


def test_same_seed_same_factors_and_different_seed_differs():
    matrix = sp.csr_matrix(random_matrix(seed=6))
    a = ALS(n_factors=6, iterations=2, seed=11).fit(matrix)
    b = ALS(n_factors=6, iterations=2, seed=11).fit(matrix)
    c = ALS(n_factors=6, iterations=2, seed=12).fit(matrix)
    assert torch.equal(a.user_factors, b.user_factors)
    assert torch.equal(a.item_factors, b.item_factors)
    assert not torch.equal(a.item_factors, c.item_factors)


def test_ials_initialisation_scale():
    model = ALS(n_factors=64, weighting="ials", iterations=0)
    model.fit(sp.csr_matrix(random_matrix(n_users=400, n_items=300)))
    assert float(model.user_factors.std()) == pytest.approx(0.1 / 8, rel=0.05)


def test_resume_continues_to_the_same_factors(tmp_path):
    matrix = sp.csr_matrix(random_matrix(seed=7))
    full = ALS(n_factors=6, iterations=5, solver="cg").fit(matrix)

    def stop_after_two(epoch, loss, seconds, model):
        if epoch == 2:
            model.save(tmp_path / "ckpt.npz")
            return True
        return False

    ALS(n_factors=6, iterations=5, solver="cg").fit(matrix, callback=stop_after_two)
    resumed = ALS.load(tmp_path / "ckpt.npz")
    assert len(resumed.history) == 2
    resumed.fit(matrix, resume=True)
    assert len(resumed.history) == 5
    assert torch.equal(resumed.user_factors, full.user_factors)
    assert torch.equal(resumed.item_factors, full.item_factors)


def test_fit_updates_the_factors_in_place_but_resume_leaves_shared_tensors_alone():
    """Epochs write into the model's own factor tensors (no fresh memory per epoch); a resumed
    fit first takes private copies, so tensors the caller still holds keep their values."""
    matrix = sp.csr_matrix(random_matrix(seed=9))
    seen = []

    def keep(epoch, loss, seconds, model):
        seen.append((model.user_factors, model.item_bias))

    model = ALS(n_factors=6, iterations=3).fit(matrix, callback=keep)
    assert all(u is model.user_factors and b is model.item_bias for u, b in seen)
    held = model.user_factors
    snapshot = held.clone()
    model.iterations = 5
    model.fit(matrix, resume=True)
    assert model.user_factors is not held
    assert torch.equal(held, snapshot)
    assert not torch.equal(model.user_factors, snapshot)


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
    with pytest.raises(TypeError, match="CSR"):
        ALS(n_factors=3).fit(dense)
    with pytest.raises(TypeError, match="CSR"):
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


def test_divergence_stops_with_a_clear_error():
    with pytest.raises(DivergenceError, match="diverged at epoch 1"):
        ALS(n_factors=4, regularization=0.0, use_bias=False, init_std=1e30, iterations=2).fit(
            sp.csr_matrix(random_matrix(seed=11))
        )


def test_memory_budget_splits_buckets_without_changing_the_result():
    matrix = sp.csr_matrix(random_matrix(seed=12))
    big = ALS(n_factors=8, iterations=2).fit(matrix)
    tiny = ALS(n_factors=8, iterations=2, memory_budget_mb=0.001).fit(matrix)
    assert torch.allclose(big.item_factors, tiny.item_factors, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_cpu_chunk_workers_give_the_serial_result_and_leave_torch_threads_alone(
    solver, monkeypatch
):
    """With T torch threads the chunks go to T single-threaded workers: same factors as one
    chunk at a time, the caller's thread count untouched."""
    import threading

    from recsys.als.solvers.base import Solver

    matrix = sp.csr_matrix(random_matrix(n_users=120, n_items=90, seed=13))
    kwargs = dict(n_factors=8, iterations=2, solver=solver, memory_budget_mb=0.002, seed=1)
    chunk_threads: set[str] = set()
    real = SOLVERS.get(solver).solve_chunk

    def recording(self, *args):
        chunk_threads.add(threading.current_thread().name)
        return real(self, *args)

    monkeypatch.setattr(SOLVERS.get(solver), "solve_chunk", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        parallel = ALS(**kwargs).fit(matrix)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert len(chunk_threads) > 1 and all(n.startswith("als-solve") for n in chunk_threads)
    monkeypatch.setattr(Solver, "_workers", lambda self, problem: 1)
    chunk_threads.clear()
    serial = ALS(**kwargs).fit(matrix)
    assert chunk_threads == {threading.main_thread().name}
    for side in ("user_factors", "item_factors"):
        a, b = getattr(parallel, side), getattr(serial, side)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), side


def test_buckets_cover_every_nonempty_row_once():
    matrix = sp.random(200, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    growth = bucket_growth(torch.device("cpu"))
    buckets, empty = build_buckets(
        matrix, WEIGHTINGS.build("hkv", alpha=2.0), torch.device("cpu"), torch.float32
    )
    rows = torch.cat([b.rows for b in buckets]).numpy()
    degrees = np.diff(matrix.indptr)
    assert sorted(rows.tolist()) == np.flatnonzero(degrees > 0).tolist()
    assert sorted(empty.tolist()) == np.flatnonzero(degrees == 0).tolist()
    for b in buckets:
        assert b.cols.dtype == torch.int32  # half the memory of int64 indices
        mask = b.cols.numpy() != matrix.shape[1]
        assert mask.sum() == degrees[b.rows.numpy()].sum()
        for row, cols, weight, target, observed in zip(
            b.rows.numpy(), b.cols.numpy(), b.weight.numpy(), b.target.numpy(), mask, strict=True
        ):
            assert cols[observed].tolist() == matrix[row].indices.tolist()
            values = matrix[row].data  # hkv: d = alpha * r, g = 1 + alpha * r, 0 in padding
            np.testing.assert_allclose(weight[observed], 2.0 * values, rtol=1e-6)
            np.testing.assert_allclose(target[observed], 1.0 + 2.0 * values, rtol=1e-6)
            assert not weight[~observed].any() and not target[~observed].any()
        assert b.width <= max(8, int(np.ceil(degrees[b.rows.numpy()].min() * growth)) + 1)


def test_bucket_widths_follow_the_device_growth_ratio():
    """Tight buckets on the CPU (padding costs more than chunks there), coarser on GPUs."""
    assert bucket_growth(torch.device("cpu")) < bucket_growth(torch.device("cuda"))
    degrees = np.repeat(np.arange(1, 400), 3)
    indices = np.concatenate([np.arange(d) for d in degrees])
    indptr = np.r_[0, np.cumsum(degrees)]
    matrix = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(degrees.size, 400))
    buckets, _ = build_buckets(matrix, WEIGHTINGS.build("hkv"), torch.device("cpu"), torch.float32)
    padded = sum(len(b) * b.width for b in buckets)
    assert padded / matrix.nnz < 1.07  # buckets 20% wide would pad these rows by ~9%


def test_registries_list_the_built_in_parts():
    assert SOLVERS.names() == ["cg", "cholesky"]
    assert WEIGHTINGS.names() == ["explicit", "hkv", "ials"]
    assert json.loads(json.dumps(ALS().params))["solver"] == "cholesky"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_cuda_matches_cpu(solver):
    matrix = sp.csr_matrix(random_matrix(seed=13))
    kwargs = dict(n_factors=16, regularization=0.1, weighting="ials", iterations=3, solver=solver)
    cpu = ALS(device="cpu", dtype="float64", **kwargs).fit(matrix)
    gpu = ALS(device="cuda", dtype="float64", **kwargs).fit(matrix)
    assert gpu.item_factors.device.type == "cuda"
    assert torch.allclose(gpu.item_factors.cpu(), cpu.item_factors, rtol=1e-6, atol=1e-8)
    assert gpu.history[-1]["loss"] == pytest.approx(cpu.history[-1]["loss"], rel=1e-6)


def brute_force_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores per row (ties by lower id), -1 padded."""
    out = np.full((scores.shape[0], k), -1)
    for r, row in enumerate(scores):
        order = [j for j in np.lexsort((np.arange(row.size), -row)) if np.isfinite(row[j])]
        out[r, : min(k, len(order))] = order[:k]
    return out


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


def test_loss_can_be_skipped_without_changing_the_factors():
    matrix = sp.csr_matrix(random_matrix(seed=16))
    with_loss = ALS(n_factors=6, iterations=3).fit(matrix)
    seen = []
    without = ALS(n_factors=6, iterations=3, calculate_loss=False)
    without.fit(matrix, callback=lambda epoch, loss, seconds, model: seen.append(loss))
    assert torch.equal(with_loss.item_factors, without.item_factors)
    assert len(seen) == 3 and all(np.isnan(seen))
    assert all(h["seconds"] > 0 for h in without.history)


# ---------------------------------------------------------------------- posterior sampling
@pytest.mark.parametrize(
    ("weighting", "n_factors"), [("explicit", 6), ("explicit", 24), ("ials", 6), ("ials", 24)]
)
def test_posterior_draws_follow_the_conditional_gaussian(weighting, n_factors):
    """Draws of one user (the row repeated) have mean A^-1 b and covariance sigma^2 A^-1."""
    dense = random_matrix()
    model = ALS(
        n_factors=n_factors, regularization=0.1, bias_regularization=0.05, weighting=weighting,
        alpha0=0.1, iterations=2, device="cpu", dtype="float64",
    ).fit(sp.csr_matrix(dense))  # fmt: skip
    user, draws, sigma = 5, 3000, 0.7
    lhs, rhs = reference_user_systems(model, dense)[user]
    rows = sp.csr_matrix(np.repeat(dense[user : user + 1], draws, axis=0))
    generator = torch.Generator().manual_seed(0)
    zeros = torch.zeros(draws, n_factors, dtype=torch.float64)
    eq = model.equations()
    factors, bias = eq.solve(
        eq.rows(rows), model.item_factors, model.item_bias, zeros, zeros[:, 0],
        noise_scale=sigma, generator=generator,
    )  # fmt: skip
    samples = torch.cat([factors, bias[:, None]], dim=1).numpy()
    # whiten with the reference: z = L^T (x - mean) / sigma must be standard normal
    chol = np.linalg.cholesky(lhs)
    z = (samples - np.linalg.solve(lhs, rhs)) @ chol / sigma
    assert np.abs(z.mean(0)).max() < 4.5 / np.sqrt(draws)
    assert np.abs(np.cov(z.T) - np.eye(z.shape[1])).max() < 0.12


@pytest.mark.parametrize("n_factors", [6, 24])
def test_draws_with_a_shared_prior_follow_the_conditional_gaussian(n_factors):
    """With a prior N(mu, P^-1) and no per-row regularization (the learned-prior sweeps)."""
    dense = random_matrix()
    model = ALS(
        n_factors=n_factors, regularization=0.1, weighting="ials", alpha0=0.1, iterations=2,
        device="cpu", dtype="float64",
    ).fit(sp.csr_matrix(dense))  # fmt: skip
    rng = np.random.default_rng(1)
    k = n_factors + 1  # solve coordinates [x, b / c]
    root = rng.normal(size=(k, k))
    precision, mean = root @ root.T / k + 0.5 * np.eye(k), rng.normal(size=k)
    user, draws, sigma = 7, 3000, 0.5
    eq = model.equations()
    c = eq.bias_column
    fixed = np.hstack([model.item_factors.numpy(), np.full((dense.shape[1], 1), c)])
    offsets = model.item_bias.numpy() + model.global_bias
    a, cols = model.weighting.all_pairs_weight, np.flatnonzero(dense[user])
    values = torch.tensor(dense[user, cols])
    d = model.weighting.observed_weight(values).numpy()
    g = model.weighting.observed_target(values).numpy()
    lhs = a * fixed.T @ fixed + fixed[cols].T @ (d[:, None] * fixed[cols]) + precision
    rhs = fixed[cols].T @ (g - d * offsets[cols]) - a * fixed.T @ offsets + precision @ mean
    rows = sp.csr_matrix(np.repeat(dense[user : user + 1], draws, axis=0))
    structure = eq.rows(rows).without_regularization()
    zeros = torch.zeros(draws, n_factors, dtype=torch.float64)
    factors, bias = eq.solve(
        structure, model.item_factors, model.item_bias, zeros, zeros[:, 0],
        noise_scale=sigma, generator=torch.Generator().manual_seed(0),
        prior=(torch.from_numpy(precision), torch.from_numpy(mean)),
    )  # fmt: skip
    samples = torch.cat([factors, bias[:, None] / c], dim=1).numpy()
    z = (samples - np.linalg.solve(lhs, rhs)) @ np.linalg.cholesky(lhs) / sigma
    assert np.abs(z.mean(0)).max() < 4.5 / np.sqrt(draws)
    assert np.abs(np.cov(z.T) - np.eye(k)).max() < 0.12


def test_normal_wishart_draw_concentrates_on_the_vectors_mean_and_precision():
    rng = np.random.default_rng(0)
    true_mean, root = np.array([1.0, -2.0, 0.5]), rng.normal(size=(3, 3))
    covariance = root @ root.T + np.eye(3)
    vectors = rng.multivariate_normal(true_mean, covariance, size=20000)
    mu, precision = draw_normal_wishart(vectors, rng)
    np.testing.assert_allclose(mu, true_mean, atol=0.06)
    np.testing.assert_allclose(precision, np.linalg.inv(covariance), atol=0.05)
    # two vectors: the hyperprior (mu0 = 0, beta0 = 2) shrinks the mean to 2 * 3 / (2 + 2)
    draws = [draw_normal_wishart(np.full((2, 3), 3.0), rng)[0] for _ in range(2000)]
    np.testing.assert_allclose(np.mean(draws, axis=0), 1.5, atol=0.2)


def explicit_problem(seed=0, n_users=120, n_items=90, rank=3, density=0.25):
    """Planted low-rank ratings with noise: a train and a held-out matrix."""
    rng = np.random.default_rng(seed)
    truth = 3.0 + rng.normal(size=(n_users, rank)) @ rng.normal(size=(rank, n_items)) / 1.5
    observed = rng.random((n_users, n_items)) < density
    ratings = np.where(observed, truth + rng.normal(scale=0.8, size=truth.shape), 0.0)
    held_out = observed & (rng.random(truth.shape) < 0.2)
    train = sp.csr_matrix(np.where(held_out, 0.0, ratings))
    rows, cols = np.nonzero(held_out)
    return train, rows, cols, ratings[rows, cols]


@pytest.mark.parametrize("prior", ["learned", "fixed"])
def test_posterior_average_predicts_held_out_ratings_better_than_the_point_estimate(prior):
    train, rows, cols, values = explicit_problem()

    def rmse(m: ALS) -> float:
        return float(np.sqrt(np.mean((m.predict(rows, cols) - values) ** 2)))

    model = ALS(
        n_factors=12, regularization=0.02, weighting="explicit", iterations=10, device="cpu"
    ).fit(train)
    point = rmse(model)
    model.sample_posterior(train, samples=40, burn_in=5, prior=prior)
    assert rmse(model) < point - 0.02


def test_sample_posterior_concatenates_draws_and_round_trips(tmp_path):
    train, rows, cols, _ = explicit_problem(n_users=40, n_items=30)
    model = ALS(n_factors=4, regularization=0.1, weighting="explicit", iterations=3, device="cpu")
    model.fit(train)
    twin = ALS.load(model.save(tmp_path / "map.npz"))
    model.sample_posterior(train, samples=3, burn_in=1, seed=7)
    assert model.user_factors.shape == (40, 12) and model.item_factors.shape == (30, 12)
    assert model.item_embeddings().shape == (30, 13)  # 3 draws x 4 factors + the item bias
    history = [h for h in model.history if h.get("phase") == "posterior"]
    assert len(history) == 4 and all(h["noise_precision"] > 0 for h in history)
    # the average of the draws' predictions is the prediction of the side-by-side model
    draws = twin.sample_posterior(train, samples=3, burn_in=1, seed=7)
    assert torch.equal(draws.user_factors, model.user_factors)  # same seed, same draws
    loaded = ALS.load(model.save(tmp_path / "posterior.npz"))
    assert loaded.posterior == {"samples": 3, "burn_in": 1, "seed": 7, "prior": "learned"}
    np.testing.assert_allclose(loaded.predict(rows, cols), model.predict(rows, cols), rtol=1e-6)
    with pytest.raises(ValueError, match="averages 3 posterior draws"):
        loaded.fold_in(train[:2])
    with pytest.raises(ValueError, match="averages 3 posterior draws"):
        loaded.fit(train, resume=True)
    loaded.fit(train)  # from scratch: a single model again
    assert loaded.posterior is None and loaded.user_factors.shape == (40, 4)


def test_sample_posterior_rejects_bad_arguments():
    train, *_ = explicit_problem(n_users=20, n_items=15)
    model = ALS(n_factors=3, regularization=0.1, weighting="explicit", iterations=1, device="cpu")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.sample_posterior(train)
    model.fit(train)
    with pytest.raises(ValueError, match="samples must be"):
        model.sample_posterior(train, samples=0)
    with pytest.raises(ValueError, match="user_items is 20 x 14"):
        model.sample_posterior(train[:, :14])
    cg = ALS(n_factors=3, regularization=0.1, weighting="explicit", solver="cg", iterations=1)
    with pytest.raises(ValueError, match="solver='cholesky'"):
        cg.fit(train).sample_posterior(train)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_solver_scratch_buffers_live_only_during_a_fit_or_fold_in(solver):
    """The workspaces (gathered rows, systems, the rotated fixed side) are reused across
    half-epochs but dropped when the fit or fold-in ends, so a fitted model holds only its
    factors."""
    matrix = sp.csr_matrix(random_matrix(n_users=40, n_items=30, seed=3))
    seen: list[bool] = []
    model = ALS(n_factors=4, iterations=2, solver=solver, seed=0)
    model.fit(matrix, callback=lambda *args: seen.append("_workspaces" in model.solver.__dict__))
    assert seen == [True, True]
    assert "_workspaces" not in model.solver.__dict__
    model.fold_in(matrix[:5])
    assert "_workspaces" not in model.solver.__dict__
