"""This process's resident memory, for benchmarks and run reports, and the memory a device
has free (so a fit can refuse settings that cannot fit before it allocates anything).

The peak comes from the kernel's high-water mark of this process's own address space (``VmHWM``
in ``/proc/self/status``). ``getrusage(...).ru_maxrss`` is not used where ``/proc`` exists: on
Linux a child process inherits the parent's high-water mark at fork (it survives ``exec``), so a
benchmark worker started by a large parent would report the parent's memory as its own peak.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

__all__ = ["available_mb", "current_rss_mb", "peak_rss_mb"]


def _status_mb(key: str, path: str = "/proc/self/status") -> float | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (NaN where /proc is missing)."""
    value = _status_mb("VmRSS")
    return float("nan") if value is None else value


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` without /proc)."""
    value = _status_mb("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 1024.0)


def available_mb(device: Any = "cpu") -> float:
    """Memory free for new allocations on `device`, in MiB: CUDA's free device memory, or the
    host's ``MemAvailable`` (NaN where neither can be read)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    value = _status_mb("MemAvailable", "/proc/meminfo") if device.type == "cpu" else None
    return float("nan") if value is None else value
