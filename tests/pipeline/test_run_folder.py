"""The run folder's safety: a complete run is never overwritten nor answered for other settings,
one run at a time holds a folder, settings the data cannot take fail before training, unreadable
checkpoints and JSON files are named, and a run whose export failed is finished by a resume."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from recsys import pipeline
from recsys.config import ConfigError

from .tiny import compose_cfg


class Interrupt(Exception):
    pass


def _stop_at(stop: int):
    def hook(epoch: int, *_: object) -> None:
        if epoch == stop:
            raise Interrupt

    return hook


@pytest.fixture
def done(tiny_run: pipeline.RunResult, tmp_path: Path) -> Path:
    """A copy of the tiny complete run (the tests may try to damage it)."""
    out = tmp_path / "done"
    shutil.copytree(tiny_run.output_dir, out)
    return out


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_completed_run_refuses_a_command_with_other_settings(done: Path) -> None:
    before = _contents(done)
    conflicts = (
        ("als.n_factors=16", "als.n_factors (completed run 4, now 16)"),
        ("index=hnsw", "index.type (completed run 'flat', now 'hnsw')"),
    )
    for override, shown in conflicts:
        with pytest.raises(ConfigError, match=r"^cannot resume .*" + re.escape(shown)):
            pipeline.run(
                compose_cfg(override, f"run_dir={done}"),
                done,
                overrides=[override, f"run_dir={done}"],
            )
    # the same settings (or only how it is shown) answer from the files
    again = pipeline.run(
        compose_cfg(f"run_dir={done}", "progress=true"),
        done,
        overrides=[f"run_dir={done}", "progress=true"],
    )
    assert again.skipped
    assert _contents(done) == before


def test_fresh_run_into_a_completed_folder_is_refused_and_deletes_nothing(done: Path) -> None:
    before = _contents(done)
    with pytest.raises(ConfigError, match=r"already holds a completed run \(metrics\.json\)"):
        pipeline.run(compose_cfg("als.iterations=1"), done)
    assert _contents(done) == before


def test_fresh_run_into_an_unfinished_folder_keeps_its_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        pipeline.run(compose_cfg(), out, epoch_hook=_stop_at(3))
    state = (out / "checkpoints" / "epoch-00002" / "state.json").read_bytes()
    with pytest.raises(ConfigError, match=rf"^{out} holds an unfinished run \(checkpoints/\)"):
        pipeline.run(compose_cfg("als.iterations=1"), out)
    assert (out / "checkpoints" / "epoch-00002" / "state.json").read_bytes() == state
    assert pipeline.run(compose_cfg("resume=true"), out).resumed_from == 2


def test_second_run_into_a_busy_folder_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # what a running train.py holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(pipeline.ArtifactError, match=rf"^{out} is in use by another run"):
            pipeline.run(compose_cfg(), out)
        assert list(out.iterdir()) == []
    finally:
        os.close(fd)  # the OS releases the lock with the descriptor (also when a run dies)
    assert pipeline.run(compose_cfg("als.iterations=1"), out).metrics["epochs"] == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["index.nlist=5000"], r"nlist must be in \[1, n_items=200\], got 5000"),
        # the default nlist of 200 items is 5: probing 64 lists would search them all
        (["index.nprobe=64"], r"nprobe must be in \[1, nlist=5\], got 64"),
        (["index.nlist=4", "index.shards=100"], r"nlist must be in \[1, the smallest shard"),
    ],
)
def test_index_settings_the_data_cannot_take_fail_before_training(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"^index \(type ivf\) does not fit .*{message}"):
        pipeline.run(compose_cfg("index=ivf", *overrides), out)
    assert not (out / "model.npz").exists() and not (out / "checkpoints").exists()


def test_resume_finishes_a_run_with_other_index_settings(tmp_path: Path) -> None:
    from recsys.index import read_sidecar

    out = tmp_path / "run"
    # a factory string is parsed by Faiss only when the index is built, after training
    with pytest.raises(
        ConfigError,
        match=r"^index \(factory 'IVF5000,Flat'\) cannot be built over the 200 items: Number "
        r"of training points \(200\) should be at least as large as number of clusters \(5000\)",
    ):
        pipeline.run(compose_cfg("index.type=factory", "index.factory='IVF5000,Flat'"), out)
    assert (out / "model.npz").is_file() and not (out / "metrics.json").exists()
    result = pipeline.run(
        compose_cfg("index=hnsw", "index.M=8", f"run_dir={out}"),
        out,
        overrides=["index=hnsw", "index.M=8", f"run_dir={out}"],
    )
    assert result.resumed_from == 2
    assert read_sidecar(out / "items.faiss")["kind"] == "hnsw"
    assert json.loads((out / "metadata.json").read_text())["config"]["index"]["type"] == "hnsw"


def test_unreadable_checkpoint_falls_back_to_an_older_one_or_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        pipeline.run(compose_cfg(), out, epoch_hook=_stop_at(3))
    checkpoints = out / "checkpoints"
    # a newer checkpoint whose state.json is damaged (a disk error, an editor)
    shutil.copytree(checkpoints / "epoch-00002", checkpoints / "epoch-00003")
    (checkpoints / "epoch-00003" / "state.json").write_text("\n")
    (checkpoints / "LATEST").write_text("epoch-00003\n")
    with caplog.at_level("WARNING", logger="recsys.pipeline"):
        loaded = pipeline.Checkpointer(checkpoints).load()
    assert loaded is not None and len(loaded[0].history) == 2
    assert "epoch-00003 is unreadable" in caplog.text
    # none readable: one line naming the file and the fix
    shutil.rmtree(checkpoints / "epoch-00003")
    (checkpoints / "epoch-00002" / "state.json").write_text("\n")
    state = checkpoints / "epoch-00002" / "state.json"
    with pytest.raises(
        pipeline.ArtifactError,
        match=rf"^no readable checkpoint in {checkpoints} \(epoch-00002: {state} is not valid "
        rf"JSON \(Expecting value: line 2 column 1 \(char 1\)\).*delete {checkpoints} to train",
    ):
        pipeline.run(compose_cfg("resume=true"), out, overrides=["resume=true"])


def test_invalid_metadata_json_names_the_file(done: Path) -> None:
    (done / "metadata.json").write_text("{\n")
    with pytest.raises(pipeline.ArtifactError, match=rf"^{done / 'metadata.json'} is not valid"):
        pipeline.load_run(done)
    with pytest.raises(pipeline.ArtifactError, match=rf"^{done / 'metadata.json'} is not valid"):
        pipeline.run(compose_cfg(f"run_dir={done}"), done, overrides=[f"run_dir={done}"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_fails_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^als\.device=cuda: .*CUDA is not available"):
        pipeline.run(compose_cfg("als.device=cuda"), out)
    assert not out.exists()


def test_checkpoint_without_its_state_keys_or_latest_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        pipeline.run(compose_cfg(), out, epoch_hook=_stop_at(3))
    checkpoints = out / "checkpoints"
    (checkpoints / "LATEST").unlink()  # lost: the complete checkpoint folder is still found
    with pytest.raises(ConfigError, match=r"holds an unfinished run"):
        pipeline.run(compose_cfg(), out)
    state = checkpoints / "epoch-00002" / "state.json"
    saved = state.read_text()
    state.write_text("{}\n")  # valid JSON, not a checkpoint's state
    with pytest.raises(pipeline.ArtifactError, match=rf"{state} lacks config / early_stopping"):
        pipeline.run(compose_cfg("resume=true"), out, overrides=["resume=true"])
    state.write_text(saved)
    assert pipeline.run(compose_cfg("resume=true"), out).resumed_from == 2
