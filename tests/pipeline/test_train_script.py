"""scripts/train.py's exits: every failure of a run is one line and a status, the run folder is
held by one run at a time, an interrupt leaves the checkpoint intact, and the scratch folders of
ranks > 0 never outlive them."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.als import DivergenceError

from .scripts import TRAIN, load_script

QUICK = ["data.preset=tiny", "als.n_factors=4", "als.device=cpu", "progress=false"]


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_failures_of_a_run_are_one_line_with_a_status() -> None:
    train = load_script("train")
    out = Path("/runs/a")
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/a/.model.npz.x.npz")
    assert train._failure(full, out) == (
        "no space left on the device writing /runs/a/.model.npz.x.npz; free space, then resume",
        1,
    )
    assert train._failure(PermissionError(errno.EACCES, "Permission denied", "/runs"), out) == (
        "Permission denied: /runs",
        1,
    )
    message, status = train._failure(ValueError("user_items has\n NaN"), out)
    assert status == 1 and message == (
        "training in /runs/a failed: user_items has NaN; its last checkpoint is kept"
    )
    assert train._failure(DivergenceError("loss is nan at epoch 3"), out) == (
        "loss is nan at epoch 3",
        2,
    )
    message, status = train._failure(KeyboardInterrupt(), out)
    assert status == 130 and "resume with run_dir=/runs/a" in message
    assert train._failure(RuntimeError("a bug"), out) is None  # a bug keeps its traceback


def test_run_folder_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for key in ("hydra.run.dir", "run_dir"):
        proc = subprocess.run(
            [*TRAIN, *QUICK, f"{key}=afile/run"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2
        assert _one_line(proc.stderr) == (
            f"error: {key}=afile/run: afile is a file, not a folder; choose another {key}"
        )


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_second_run_into_a_busy_folder_fails_and_an_interrupt_keeps_the_checkpoint(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen(
        [*TRAIN, *QUICK, "als.iterations=1000000", "eval.patience=0", "checkpoint.every=1",
         "tracking.enabled=false", f"hydra.run.dir={run}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(run / "checkpoints" / "LATEST", first)
        hydra_files = {p: p.read_bytes() for p in (run / ".hydra").iterdir()}
        second = subprocess.run(
            [*TRAIN, *QUICK, "checkpoint.every=0", f"hydra.run.dir={run}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        assert _one_line(second.stderr) == (
            f"error: {run} is in use by another run; wait for it to finish or train into "
            "another folder (hydra.run.dir)"
        )
        assert first.poll() is None  # the first run goes on, its Hydra files untouched
        assert {p: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130
    assert _one_line(stderr) == (
        f"error: interrupted; the last checkpoint in {run} is intact: resume with run_dir={run}"
    )
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    assert (run / "checkpoints" / latest / "state.json").is_file()
    assert not (run / "metrics.json").exists()


def test_rank_scratch_folders_are_removed_also_after_a_killed_rank(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = tmp / "recsys-rank1-999999999-abc"  # left by a rank killed with kill -9
    dead.mkdir()
    other = tmp / "recsys-rank1-notes"  # not a scratch folder: kept
    other.mkdir()
    env = {**os.environ, "RANK": "1", "TMPDIR": str(tmp)}
    proc = subprocess.run(
        [*TRAIN, *QUICK, "als.iterations=1", "checkpoint.every=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp.iterdir()) == ["recsys-rank1-notes"]


@pytest.mark.parametrize(
    "name", ["model.npz", "metadata.json", "metadata", "metrics", "train.npz", "../x.faiss",
             "/tmp/x.faiss", ".items.faiss", "sub/x.faiss", ""],
)  # fmt: skip
def test_export_index_out_never_names_another_artifact(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.output_dir, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    export = load_script("export_index")
    assert export.main([f"run_dir={run}", "index=ivf", f"out={name}", "check=0"]) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"error: out={name}: give a file name ending in .faiss (no folder, e.g. out=ivf.faiss); "
        "it is written into the run folder next to the run's own artifacts"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not (tmp_path / "x.faiss").exists()


def test_export_index_says_which_index_it_replaces(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.output_dir, run)
    export = load_script("export_index")
    assert export.main([f"run_dir={run}", "index=hnsw", "check=0"]) == 0
    out = capsys.readouterr().out
    assert "[recsys] replaced the previous items.faiss: flat index, metric ip" in out
    assert export.main([f"run_dir={run}", "out=new.faiss", "check=0"]) == 0
    assert "replaced" not in capsys.readouterr().out


def test_an_interrupt_before_the_run_starts_is_one_line(monkeypatch, capsys) -> None:
    script = load_script("train")

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "train", interrupted)
    monkeypatch.setattr(sys, "argv", ["train.py", "progress=false"])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == (
        "error: interrupted before the run started; nothing was trained"
    )


def test_export_index_help_and_a_typo(tiny_run, capsys: pytest.CaptureFixture[str]) -> None:
    export = load_script("export_index")
    assert export.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(export.__doc__.strip().splitlines()[0])
    assert out.strip().endswith("keys: " + ", ".join(export.KEYS))
    assert {"run_dir", "out", "check", "device", "index", "index.nprobe"} <= set(export.KEYS)
    assert export.main([f"run_dir={tiny_run.output_dir}", "outt=x.faiss"]) == 2
    message = _one_line(capsys.readouterr().err)
    assert message.startswith("error: outt=x.faiss: export_index.py takes run_dir=, out=")
    assert message.endswith("; did you mean out?")


def test_help_lists_the_options_of_each_group_not_their_schemas(tmp_path: Path) -> None:
    proc = subprocess.run([*TRAIN, "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "base_" not in proc.stdout
    for line in ("als: explicit, hkv, ials", "index: flat, hnsw, ivf",
                 "experiment: gowalla, ml100k_explicit", "  n_factors: 64"):  # fmt: skip
        assert f"\n{line}\n" in proc.stdout, line
    assert not (tmp_path / "outputs").exists()


def test_a_failed_start_writes_its_error_into_the_run_folders_log(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*TRAIN, *QUICK, "data=files", "data.path=missing.csv"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    message = _one_line(proc.stderr).removeprefix("error: ")
    assert "missing.csv" in message
    (log,) = (tmp_path / "outputs").glob("*/*/train.log")
    assert log.read_text().strip().endswith(f"[recsys][ERROR] - {message}")


def test_an_unexpected_error_goes_into_the_log_file_with_its_traceback(tmp_path: Path) -> None:
    import logging

    train = load_script("train")
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            train._log_to_file("the run failed with an unexpected error", sys.exc_info())
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    text = (tmp_path / "train.log").read_text()
    assert text.startswith("the run failed with an unexpected error\nTraceback")
    assert "RuntimeError: a bug" in text


def test_resume_with_nothing_to_resume_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    proc = subprocess.run([*TRAIN, *QUICK, "resume=true"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == (
        f"error: resume=true: no unfinished run under {tmp_path.resolve() / 'outputs'} (a "
        "<date>/<time> folder holding checkpoints/ and no metrics.json); name the run to "
        "continue with run_dir=<run folder>, or drop resume=true to start a new run"
    )
    assert not (tmp_path / "outputs").exists()  # no new run folder
    train = load_script("train")
    monkeypatch.chdir(tmp_path)
    assert train._resume_problem(["resume=true"], multirun=False) is not None
    for overrides in (["resume=false"], ["resume=true", "run_dir=x"],
                      ["resume=true", "hydra.run.dir=x"]):  # fmt: skip
        assert train._resume_problem(overrides, multirun=False) is None, overrides
    unfinished = tmp_path / "outputs" / "2024-01-01" / "10-00-00" / "checkpoints"
    unfinished.mkdir(parents=True)
    (unfinished / "LATEST").write_text("epoch-00001\n")
    assert train._resume_problem(["resume=true"], multirun=False) is None
