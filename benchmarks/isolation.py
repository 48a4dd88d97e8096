"""Each benchmark run in a fresh process, so that its peak resident memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.runs import RunSpec, run_spec

#: the repository root: the folder that holds ``benchmarks/`` and ``recsys/``
REPO = Path(__file__).resolve().parents[1]


def run_isolated(
    spec: RunSpec, timeout: float | None = None, workdir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Run :func:`run_spec` in a fresh Python process so that its peak memory is its own.

    The spec goes in and the result comes back as JSON files in ``workdir``. A crash, a timeout
    or an exception becomes a result with ``error`` set (and the run's identity), never an
    exception here, so one failing configuration does not end a long benchmark.
    """
    import tempfile

    work = Path(workdir or tempfile.mkdtemp(prefix="recsys-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    spec_path, out_path = work / f"spec-{tag}.json", work / f"result-{tag}.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # the child imports this folder and recsys from the same repository as the parent
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "benchmarks.isolation", "--worker", str(spec_path), str(out_path)]
    failure = None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0 or not out_path.is_file():
            log = work / f"failed-{tag}.log"
            log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
            lines = [x for x in (proc.stderr or proc.stdout or "").splitlines() if x.strip()]
            last = lines[-1].strip() if lines else "no output"
            failure = f"exit code {proc.returncode}: {last} (full log: {log})"
    except subprocess.TimeoutExpired:
        failure = f"timed out after {timeout} s"
    finally:
        spec_path.unlink(missing_ok=True)
    if failure is not None:
        return _failed(spec, failure)
    result = json.loads(out_path.read_text())
    out_path.unlink(missing_ok=True)
    result["isolated"] = True
    return result


def _failed(spec: RunSpec, error: str) -> dict[str, Any]:
    return {
        "spec": asdict(spec),
        "dataset": spec.dataset["name"],
        "model": spec.model,
        "library": spec.library,
        "device": spec.device,
        "factors": spec.factors,
        "iterations": spec.iterations,
        "threads": spec.threads,
        "error": error,
    }


def run_in_process(spec: RunSpec) -> dict[str, Any]:
    """:func:`run_spec` in this process (fast, for smoke runs); failures become ``error``.

    The peak memory is then the whole process's peak so far, not the run's own: the result says
    so with ``isolated=False``.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        result = run_spec(spec)
    except Exception as exc:
        return _failed(spec, f"{type(exc).__name__}: {exc}")
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting as it was
    result["isolated"] = False
    return result


def _worker_main(spec_path: str, out_path: str) -> None:
    spec = RunSpec(**json.loads(Path(spec_path).read_text()))
    result = run_spec(spec)
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out_path)


if __name__ == "__main__":  # child-process entry of run_isolated
    if len(sys.argv) != 4 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m benchmarks.isolation --worker SPEC.json RESULT.json")
    _worker_main(sys.argv[2], sys.argv[3])
