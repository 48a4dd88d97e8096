"""Distributed ALS (recsys.als.distributed) with 2 Gloo processes on the CPU.

The multi-process tests start two ranks once (this file is their script: ``python
tests/test_distributed.py worker <folder>``, RANK/WORLD_SIZE/MASTER_* in the environment, one
thread each) and check what they wrote against single-process references computed here:

- every weighting with and without biases, the CG solver and float64 give the single-process
  factors within 1e-4 (relative to the largest entry) and the same loss history;
- every rank ends with the same full factors; rank 0's stop decision stops all ranks; ranks given
  different data refuse to train;
- the pipeline: only rank 0 writes; an interrupted distributed run resumes from its checkpoint to
  the single-process run's factors;
- a rank that stops answering makes the other fail after the group's timeout, and a rank that
  dies makes the other fail at once, both with an error naming the cause.

The end-to-end test runs ``torchrun --nproc_per_node=2 scripts/train.py als.distributed=true``.
The tests that start processes are marked slow: each process imports torch (a few seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[2]

#: ALS settings of the equivalence checks (4 epochs, 6 factors on the problem below).
CONFIGS: dict[str, dict[str, Any]] = {
    "hkv": {"weighting": "hkv", "alpha": 2.0, "use_bias": False},
    "hkv_bias": {"weighting": "hkv", "alpha": 2.0, "use_bias": True},
    "ials": {"weighting": "ials", "alpha0": 0.1, "use_bias": False},
    "ials_bias": {"weighting": "ials", "alpha0": 0.1, "use_bias": True},
    "explicit": {"weighting": "explicit", "use_bias": False},
    "explicit_bias": {"weighting": "explicit", "use_bias": True},
    "hkv_cg_bias": {"weighting": "hkv", "solver": "cg", "use_bias": True},
    "ials_float64": {"weighting": "ials", "alpha0": 0.1, "dtype": "float64"},
}

#: The pipeline run of the workers (validated without Hydra, so the schema defaults apply).
PIPELINE_CFG: dict[str, Any] = {
    "data": {"preset": "tiny"},
    "als": {"n_factors": 4, "iterations": 4, "regularization": 0.05, "device": "cpu"},
    "eval": {"k": [5, 10], "objective": "recall@10", "patience": 0},
    "checkpoint": {"every": 2},
    "progress": False,
    "tracking": {"enabled": False},
}

TIMEOUT_STUCK_S = 2.0  # the group timeout of the "rank stops answering" phase
TIMEOUT_DEAD_S = 5.0  # the group timeout of the "rank dies" phase


def _als_kwargs(name: str) -> dict[str, Any]:
    return {"n_factors": 6, "regularization": 0.1, "iterations": 4, "device": "cpu", "seed": 3,
            **CONFIGS[name]}  # fmt: skip


def _problem() -> sp.csr_matrix:
    """150 users x 90 items, uneven activity (heavy first users and items, so the balanced
    shards have unequal sizes), an empty user and an empty item, ratings 1..5."""
    rng = np.random.default_rng(0)
    density = np.full((150, 90), 0.05)
    density[:20] = 0.4
    density[:, :10] += 0.3
    mask = rng.random(density.shape) < density
    mask[7] = False
    mask[:, 11] = False
    values = rng.integers(1, 6, size=mask.shape).astype(np.float32)
    return sp.csr_matrix(np.where(mask, values, 0.0).astype(np.float32))


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------ in-process
def test_balanced_partition_cuts_near_equal_weight_and_covers_every_row() -> None:
    from recsys.als.distributed import Partition

    rng = np.random.default_rng(1)
    weights = rng.pareto(1.5, size=1000) * 10 + 1
    for parts in (1, 2, 3, 5, 8):
        p = Partition.balanced(weights, parts)
        assert p.bounds[0] == 0 and p.total == 1000 and p.parts == parts
        assert all(size >= 1 for size in p.sizes)
        totals = [weights[lo:hi].sum() for lo, hi in p.ranges()]
        # each cut is within one row's weight of its target: parts differ by < 2 max weights
        assert max(totals) - min(totals) <= 2 * weights.max()
        assert abs(max(totals) - weights.sum() / parts) <= weights.max()
    # count balancing when weights are equal; fewer rows than parts leaves empty parts
    assert Partition.balanced(np.ones(10), 3).sizes in ([3, 4, 3], [3, 3, 4], [4, 3, 3])
    assert Partition.balanced(np.ones(2), 4).sizes == [1, 1, 0, 0]
    assert Partition.balanced(np.ones(0), 2).sizes == [0, 0]
    with pytest.raises(ValueError, match="bounds"):
        Partition((0, 3, 2))


def test_shard_plan_balances_interactions_plus_one_per_row() -> None:
    from recsys.als.distributed import shard_plan

    matrix = _problem()
    users, items = shard_plan(matrix, 2)
    user_work = [matrix[lo:hi].nnz + (hi - lo) for lo, hi in users.ranges()]
    item_work = [matrix[:, lo:hi].nnz + (hi - lo) for lo, hi in items.ranges()]
    assert abs(user_work[0] - user_work[1]) <= 2 * (np.diff(matrix.indptr).max() + 1)
    assert abs(item_work[0] - item_work[1]) <= 2 * (matrix.getnnz(axis=0).max() + 1)
    # the heavy first users make the shards unequal in rows (the uneven all-gather path)
    assert users.sizes[0] < users.sizes[1]


@pytest.fixture()
def one_rank_group(tmp_path: Path):
    """A 1-process Gloo group in this process, destroyed afterwards."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_one_rank_distributed_fit_equals_the_plain_fit_exactly(one_rank_group: None) -> None:
    from recsys.als import ALS

    matrix = _problem()
    for name in ("hkv_bias", "explicit"):
        plain = ALS(**_als_kwargs(name)).fit(matrix)
        dist_model = ALS(**_als_kwargs(name)).fit(matrix, distributed=True)
        assert torch.equal(dist_model.user_factors, plain.user_factors)
        assert torch.equal(dist_model.item_factors, plain.item_factors)
        # the loss's observed terms are summed item by item there (float32 scores): same to ~1e-9
        assert [h["loss"] for h in dist_model.history] == pytest.approx(
            [h["loss"] for h in plain.history], rel=1e-7
        )


def test_communicator_needs_a_process_group_and_pipeline_checks_the_launch(monkeypatch) -> None:
    from recsys.als.distributed import Communicator, DistributedError
    from recsys.config import ConfigError, validate
    from recsys.pipeline.fit import als_kwargs
    from recsys.pipeline.ranks import join_ranks

    with pytest.raises(DistributedError, match="init_process_group"):
        Communicator()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"add als\.distributed=true"):
        join_ranks(validate(PIPELINE_CFG))
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    cfg = validate({**PIPELINE_CFG, "als": {**PIPELINE_CFG["als"], "distributed": True}})
    assert join_ranks(cfg) is None  # not under torchrun: one process, with a warning
    assert "distributed" not in als_kwargs(cfg)


# ------------------------------------------------------------------------------ 2 processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {**os.environ, **threads, **extra}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the two worker ranks once; their results are in the returned folder."""
    folder = tmp_path_factory.mktemp("ranks")
    port = str(_free_port())
    procs = []
    for r in range(2):
        env = _env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port)  # fmt: skip
        with open(folder / f"rank{r}.log", "w") as log:
            cmd = [sys.executable, __file__, "worker", str(folder)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 300
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the worker ranks did not finish in 300 s (hung?)")
    logs = [(folder / f"rank{r}.log").read_text() for r in range(2)]
    # rank 1 dies on purpose in the last phase, rank 0 then fails on purpose
    assert procs[1].returncode == 17, logs[1][-3000:]
    assert procs[0].returncode == 3, logs[0][-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_ranks_give_the_single_process_factors(workers: Path, name: str) -> None:
    from recsys.als import ALS

    reference = ALS(**_als_kwargs(name)).fit(_problem())
    with np.load(workers / f"{name}.npz") as got:
        for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
            want = getattr(reference, key)
            assert (key in got.files) == (want is not None), key
            if want is not None:
                assert _relative_difference(got[key], want.numpy()) < 1e-4, key
        np.testing.assert_allclose(got["loss"], [h["loss"] for h in reference.history], rtol=1e-6)


@pytest.mark.slow
def test_every_rank_ends_with_the_same_full_factors(workers: Path) -> None:
    with np.load(workers / "hkv_bias.npz") as r0, np.load(workers / "hkv_bias.rank1.npz") as r1:
        for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
            np.testing.assert_array_equal(r0[key], r1[key])


@pytest.mark.slow
def test_rank_zero_decides_when_to_stop_and_ranks_check_their_inputs(workers: Path) -> None:
    report = json.loads((workers / "checks.json").read_text())
    assert report["epochs_after_stop"] == [2, 2]  # rank 0 said stop after epoch 2, rank 1 never
    for message in report["mismatch_errors"]:  # both ranks refuse, with the same explanation
        assert "ranks were given different data" in message and "interactions" in message


@pytest.mark.slow
def test_distributed_pipeline_writes_once_and_resumes_to_the_single_process_factors(
    workers: Path, tmp_path: Path
) -> None:
    from recsys import pipeline
    from recsys.als import ALS

    report = json.loads((workers / "pipeline.json").read_text())
    out = Path(report["output_dir"])
    assert report["interrupted_checkpoint"] == "epoch-00002"
    assert report["rank0"]["primary"] and not report["rank1"]["primary"]
    assert report["rank0"]["resumed_from"] == report["rank1"]["resumed_from"] == 2
    assert report["rank1"]["metrics"] == {}  # rank 1 writes and reports nothing of its own
    assert report["rank1"]["objective"] == report["rank0"]["objective"]
    assert report["rank1_wrote"] == []  # rank 1's own (unused) folder stays empty
    names = {p.name for p in out.iterdir()}
    assert {"model.npz", "items.faiss", "metrics.json", "metadata.json", "train.npz"} <= names
    assert "checkpoints" not in names
    meta = json.loads((out / "metadata.json").read_text())
    dist_info = meta["distributed"]
    assert dist_info["world_size"] == 2 and dist_info["backend"] == "gloo"
    assert sum(dist_info["user_interactions_per_rank"]) == meta["data"]["fit"]["nnz"]
    assert len(dist_info["peak_rss_mb_per_rank"]) == 2
    assert meta["resumed_from_epoch"] == 2
    # the same run in one process, uninterrupted
    single = pipeline.run(PIPELINE_CFG, tmp_path / "single")
    want = ALS.load(single.artifacts["model"])
    got = ALS.load(out / "model.npz")
    assert len(got.history) == len(want.history)
    for key in ("user_factors", "item_factors"):
        assert _relative_difference(getattr(got, key).numpy(), getattr(want, key).numpy()) < 1e-4
    assert report["rank0"]["objective"] == pytest.approx(single.objective, abs=1e-6)


@pytest.mark.slow
def test_a_rank_that_stops_answering_fails_the_other_after_the_timeout(workers: Path) -> None:
    report = json.loads((workers / "stuck.json").read_text())
    assert report["error"] == "DistributedError"
    assert TIMEOUT_STUCK_S - 0.5 <= report["waited_s"] <= TIMEOUT_STUCK_S + 10.0
    message = report["message"]
    assert "Timed out" in message  # Gloo's words, quoted
    assert "another rank died" in message and f"timeout ({TIMEOUT_STUCK_S:g} s;" in message


@pytest.mark.slow
def test_a_rank_that_dies_makes_the_other_exit_with_a_clear_error(workers: Path) -> None:
    report = json.loads((workers / "dead.json").read_text())
    died_at = float((workers / "rank1_died_at").read_text())
    assert report["error"] == "DistributedError"
    # detected at once (connection closed) or at the latest when the timeout expires
    assert 0.0 <= report["caught_at"] - died_at <= TIMEOUT_DEAD_S + 5.0
    message = report["message"]
    assert message.startswith("rank 0 of 2:") and "failed after" in message
    assert "another rank died" in message and "resumes from the last checkpoint" in message


# ------------------------------------------------------------------------------ torchrun
@pytest.mark.slow
def test_torchrun_train_script_writes_artifacts_once(tmp_path: Path) -> None:
    from recsys import pipeline
    from recsys.als import ALS

    cli = ["data.preset=tiny", "als.n_factors=4", "als.iterations=3", "als.device=cpu",
           "eval.k=[10]", "eval.objective=recall@10", "eval.patience=0", "progress=false",
           "tracking.projector_max_items=20"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "scripts" / "train.py"), "als.distributed=true", *cli, "run_dir=run"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert proc.stdout.count("recall@10 = ") == 1  # only rank 0 reports and logs
    assert (proc.stdout + proc.stderr).count("[recsys.pipeline][INFO] - data: ") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one folder, rank 0's
    run = tmp_path / "run"
    assert run.joinpath("train.log").read_text().count("[recsys.pipeline][INFO] - data: ") == 1
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["distributed"]["world_size"] == 2
    assert "checkpoints" not in {p.name for p in run.iterdir()}
    # the same factors as the run in one process
    from hydra import compose, initialize_config_dir

    from recsys.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=cli)
    single = ALS.load(pipeline.run(cfg, tmp_path / "single").artifacts["model"])
    got = ALS.load(run / "model.npz")
    for key in ("user_factors", "item_factors"):
        assert _relative_difference(getattr(got, key).numpy(), getattr(single, key).numpy()) < 1e-4


@pytest.mark.slow
def test_distributed_benchmark_reports_each_rank_and_the_same_factors(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_distributed.py"), "--preset", "tiny",
         "--processes", "1", "2", "--factors", "4", "--epochs", "2", "--threads", "2",
         "--timeout", "240", "--out", str(out)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    nnz = doc["dataset"]["interactions"]
    single, double = doc["rows"]
    assert (single["processes"], double["processes"]) == (1, 2)
    assert single["user_interactions_per_rank"] == [nnz]
    # each rank holds its share of the interactions, the shares cover every interaction once
    for key in ("user_interactions_per_rank", "item_interactions_per_rank"):
        shares = double[key]
        assert len(shares) == 2 and sum(shares) == nnz and min(shares) > 0.4 * nnz
    assert all(v > 0 for v in double["peak_rss_mib_per_rank"])
    assert double["max_relative_difference"] < 1e-4
    assert double["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert "| 2 | 1 |" in (out / "table.md").read_text()
    assert not (out / "tiny.npz").exists()  # the prepared data is removed


# ------------------------------------------------------------------------------ the workers
class _Interrupt(Exception):
    pass


def _save_factors(path: Path, model: Any) -> None:
    arrays = {"loss": np.array([h["loss"] for h in model.history])}
    for key in ("user_factors", "item_factors", "user_bias", "item_bias"):
        if getattr(model, key) is not None:
            arrays[key] = getattr(model, key).numpy()
    np.savez(path, **arrays)


def _phase_equivalence(folder: Path, comm: Any) -> None:
    from recsys.als import ALS

    matrix = _problem()
    for name in CONFIGS:
        model = ALS(**_als_kwargs(name)).fit(matrix, distributed=True)
        suffix = "" if comm.rank == 0 else ".rank1"
        if comm.rank == 0 or name == "hkv_bias":
            _save_factors(folder / f"{name}{suffix}.npz", model)
    stop = ALS(**_als_kwargs("hkv")).fit(
        matrix, callback=lambda epoch, *_: comm.rank == 0 and epoch == 2, distributed=True
    )
    epochs = comm.all_gather_values([len(stop.history)], "test")[:, 0].astype(int).tolist()
    other = matrix.copy()
    if comm.rank == 1:
        other = other[:, :-1].tocsr()  # rank 1 loaded something else
    try:
        ALS(**_als_kwargs("hkv")).fit(other, distributed=True)
        message = "no error"
    except ValueError as err:
        message = str(err)
    messages = [message, comm.broadcast_text(message, "test", src=1)]
    if comm.rank == 0:
        report = {"epochs_after_stop": epochs, "mismatch_errors": messages}
        (folder / "checks.json").write_text(json.dumps(report))


def _phase_pipeline(folder: Path, comm: Any) -> None:
    from recsys import pipeline

    cfg = {**PIPELINE_CFG, "als": {**PIPELINE_CFG["als"], "distributed": True}}
    own = folder / f"pipeline-rank{comm.rank}"  # rank 1's folder must stay unused

    def interrupt(epoch: int, *_: Any) -> None:
        if epoch == 3:
            raise _Interrupt

    with contextlib.suppress(_Interrupt):
        pipeline.run(cfg, own, epoch_hook=interrupt)
    latest = (folder / "pipeline-rank0" / "checkpoints" / "LATEST").read_text().strip()
    result = pipeline.run({**cfg, "resume": True}, own)
    summary = {
        "primary": result.primary,
        "resumed_from": result.resumed_from,
        "metrics": result.metrics,
        "objective": result.objective,
    }
    text = comm.broadcast_text(json.dumps(summary), "test", src=1)
    if comm.rank == 0:
        report = {
            "output_dir": str(result.output_dir),
            "interrupted_checkpoint": latest,
            "rank0": summary,
            "rank1": json.loads(text),
            "rank1_wrote": sorted(p.name for p in (folder / "pipeline-rank1").glob("*")),
        }
        (folder / "pipeline.json").write_text(json.dumps(report))


def _phase_stuck(folder: Path, comm: Any) -> None:
    """Rank 1 never joins a fit on a group with a short timeout; rank 0 must give up."""
    import datetime

    import torch.distributed as dist

    from recsys.als import ALS
    from recsys.als import distributed as rd

    group = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=TIMEOUT_STUCK_S))
    if comm.rank == 1:
        time.sleep(TIMEOUT_STUCK_S + 1.5)
        return
    start = time.monotonic()
    try:
        comm = rd.Communicator(group, timeout_s=TIMEOUT_STUCK_S)
        ALS(**_als_kwargs("hkv")).fit(_problem(), distributed=comm)
        report = {"error": None}
    except rd.DistributedError as err:
        report = {"error": type(err).__name__, "message": str(err)}
    report["waited_s"] = time.monotonic() - start
    (folder / "stuck.json").write_text(json.dumps(report))


def _phase_dead(folder: Path, comm: Any) -> None:
    """Rank 1 dies after epoch 2; rank 0 must stop with a DistributedError, then exits 3."""
    import datetime

    import torch.distributed as dist

    from recsys.als import ALS
    from recsys.als import distributed as rd

    group = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=TIMEOUT_DEAD_S))
    dead_comm = rd.Communicator(group, timeout_s=TIMEOUT_DEAD_S)

    def die(epoch: int, *_: Any) -> None:
        if comm.rank == 1 and epoch == 2:
            (folder / "rank1_died_at").write_text(repr(time.time()))
            os._exit(17)

    try:
        ALS(**_als_kwargs("hkv")).fit(_problem(), callback=die, distributed=dead_comm)
        report = {"error": None}
    except rd.DistributedError as err:
        report = {"error": type(err).__name__, "message": str(err)}
    report["caught_at"] = time.time()
    (folder / "dead.json").write_text(json.dumps(report))
    sys.stdout.flush()
    os._exit(3)  # an orderly exit could wait on the broken group


def _worker(folder: Path) -> None:
    from recsys.als.distributed import init_process_group

    torch.set_num_threads(1)
    comm = init_process_group(timeout_s=120)
    _phase_equivalence(folder, comm)
    _phase_pipeline(folder, comm)
    _phase_stuck(folder, comm)
    _phase_dead(folder, comm)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _worker(Path(sys.argv[2]))
