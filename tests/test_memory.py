"""recsys.memory: a process's own peak memory, not its parent's."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.memory import current_rss_mb, peak_rss_mb

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_child_reports_its_own_peak_not_the_parents() -> None:
    ballast = np.ones(64 * 2**20 // 8 * 6)  # 384 MiB touched in this (parent) process
    parent_now = current_rss_mb()
    assert peak_rss_mb() >= parent_now >= 384
    code = "from recsys.memory import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    child_peak = float(out.stdout)
    # ru_maxrss would give the child at least the parent's resident memory at fork
    assert 0 < child_peak < parent_now - 300
    del ballast


def test_available_memory_of_the_host_is_positive():
    from recsys.memory import available_mb

    free = available_mb("cpu")
    assert free > 0 or math.isnan(free)
