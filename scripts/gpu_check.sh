#!/usr/bin/env bash
# The GPU check: CUDA tests plus the GPU benchmark, in one run of well under 8 minutes
# (about 3 minutes on an H200 in session 6).
#
# On a machine with a GPU and the project installed:   bash scripts/gpu_check.sh [OUT_DIR]
#
# Through the device tool (its image has torch but not faiss, hydra or omegaconf): first fetch
# the missing wheels here, once per session (.whl/ is git-ignored):
#   bash scripts/gpu_check.sh --fetch-wheels
# then run on the device machine with carry=[".whl"]:
#   bash scripts/gpu_check.sh "$OUT"
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    for spec in faiss-cpu==1.15.1 hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 \
        PyYAML==6.0.2; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 -d .whl "$spec" ||
            python3 -m pip download -q --no-deps -d .whl "$spec"
    done
    # antlr4-python3-runtime (omegaconf's parser) is published as a source archive only: build
    # it into a wheel here, since the install below takes wheels and the device has no network
    if compgen -G ".whl/*.tar.gz" >/dev/null; then
        python3 -m pip wheel -q --no-deps -w .whl .whl/*.tar.gz && rm .whl/*.tar.gz
    fi
    exit 0
fi

out="${1:-outputs/gpu_check}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
PY="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1

nvidia-smi -L | tee "$out/card.txt"
status=0
# 1. every test marked cuda (they skip without CUDA, so a skip here is a failure to look at)
timeout 180 "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests 2>&1 | tee "$out/cuda_tests.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# 2. the GPU benchmark: MovieLens-20M-scale synthetic, 64..1024 factors, fp32
timeout 300 "$PY" scripts/benchmark.py --device cuda --datasets synthetic:ml20m \
    --factors 64 128 256 512 1024 --iterations 5 --threads 16 --timeout 240 --out "$out/bench" \
    2>&1 | tee "$out/benchmark.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
exit $status
