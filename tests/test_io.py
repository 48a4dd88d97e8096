"""recsys.io.atomic_path: the mode of new files and their durability."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.als import ALS
from recsys.io import atomic_path


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    before = os.umask(umask)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode


def test_the_file_and_its_folder_are_fsynced_before_returning(tmp_path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
        assert synced == []
    assert synced[0].startswith(str(tmp_path / ".a.txt."))  # the content, before the rename
    assert synced[1] == str(tmp_path)  # then the folder entry of the renamed file
    assert (tmp_path / "a.txt").read_text() == "x"


def test_a_saved_model_is_readable_by_others_under_umask_022(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        model = ALS(n_factors=2, iterations=1, device="cpu")
        model.fit(sp.eye(4, format="csr", dtype=np.float32))
        path = model.save(tmp_path / "model.npz")
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert np.load(path, allow_pickle=False)["format_version"] == 1
