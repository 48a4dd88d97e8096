"""The machine a benchmark ran on: CPU, load, library versions, commit, GPU."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(module)
    except Exception:
        return None


def _git_commit(repo: Path) -> dict[str, Any]:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": None, "dirty": None}


def machine_info(threads: int, device: str = "cpu") -> dict[str, Any]:
    """What BENCHMARKS.md must quote: CPU, cores, load, library versions, threads, the GPU."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "implicit": _version("implicit"),
        "lenskit": _version("lenskit"),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "threads": threads,
        "torch_threads": f"torch.set_num_threads({threads})",
        "implicit_threads": f"num_threads={threads}, OpenBLAS limited to 1 during fit",
        "lenskit_threads": f"LK_NUM_THREADS={threads} (Rayon), LK_NUM_BACKEND_THREADS=1",
        "torch_mkl": bool(torch.backends.mkl.is_available()),
        "device": device,
        "gpu": None,
        **_git_commit(Path(__file__).resolve().parents[1]),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
        try:
            import implicit.gpu

            info["implicit_gpu"] = bool(implicit.gpu.HAS_CUDA)
        except Exception:
            info["implicit_gpu"] = False
    return info


def machine_markdown(info: Mapping[str, Any]) -> str:
    """The machine block printed above the tables."""
    lines = [
        f"- date: {info['date']}; commit {info.get('commit')}"
        + (" (uncommitted changes)" if info.get("dirty") else ""),
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable); load "
        f"average at start {_fmt_load(info.get('load_average'))}",
        f"- threads: {info['threads']} for every library ({info['torch_threads']}; implicit "
        f"{info['implicit_threads']}; LensKit {info.get('lenskit_threads')})",
        f"- versions: python {info['python']}, torch {info['torch']}, implicit {info['implicit']}, "
        f"lenskit {info.get('lenskit')}, numpy {info['numpy']}, scipy {info['scipy']}",
    ]
    load = info.get("load_average")
    if load and info.get("cores_usable") and load[0] > 0.25 * info["cores_usable"]:
        lines.append(
            f"- WARNING: the machine was busy at the start (1-minute load {load[0]:.2f} on "
            f"{info['cores_usable']} cores): other processes distort these timings"
        )
    if info.get("gpu"):
        lines.append(
            f"- GPU: {info['gpu']} (CUDA {info.get('cuda')}); implicit GPU build: "
            f"{'yes' if info.get('implicit_gpu') else 'no (ours alone)'}"
        )
    return "\n".join(lines)


def _fmt_load(load: Any) -> str:
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)
