"""recsys.pipeline.artifacts: strict JSON, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys import pipeline
from recsys.io import atomic_path


def test_json_artifacts_are_strict_json(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    pipeline.atomic_write_json(
        target, {"a": float("nan"), "b": [np.float32(np.inf), np.int64(3)], "c": {"d": 0.5}}
    )
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 3], "c": {"d": 0.5}}


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    pipeline.atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise TypeError("boom")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
