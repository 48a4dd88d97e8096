"""The pipeline tests' shared run: the tiny preset trained once, read by several test files."""

from __future__ import annotations

import pytest

from recsys import pipeline

from .tiny import compose_cfg


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.RunResult:
    out = tmp_path_factory.mktemp("tiny") / "run"
    return pipeline.run(compose_cfg(), out)
