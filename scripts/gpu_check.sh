#!/usr/bin/env bash
# The GPU check, in one run of under 10 minutes: the CUDA tests, the exact-epoch benchmark, the
# whole Gowalla run on the GPU (load, train, full evaluation, index export) and the stage
# benchmark (time to quality GPU against CPU, evaluation at 1024 factors, top-500 candidates).
#
# On a machine with a GPU and the project installed:   bash scripts/gpu_check.sh [OUT_DIR]
#
# Through the device tool (its image has torch but not faiss, hydra or omegaconf): first fetch
# the missing wheels here, once per session (.whl/ is git-ignored):
#   bash scripts/gpu_check.sh --fetch-wheels
# The Gowalla steps read DATA_ROOT (default ../shared/data, which does not travel to the device
# machine: copy ../shared/data/gowalla into an ignored .gpudata/ and carry it). Then run on the
# device machine with carry=[".whl", ".gpudata"]:
#   DATA_ROOT=.gpudata bash scripts/gpu_check.sh "$OUT"
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
timeout 150 "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests 2>&1 | tee "$out/cuda_tests.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# 2. the whole Gowalla run on the GPU: its metadata.json has the per-stage timings
data_root="$(realpath "${DATA_ROOT:-../shared/data}")"
run_dir="$(mktemp -d)/gowalla_gpu"
timeout 150 "$PY" scripts/train.py +experiment=gowalla als.device=cuda progress=false \
    data.path="$data_root/gowalla" hydra.run.dir="$run_dir" 2>&1 | tee "$out/gowalla_gpu.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
cp "$run_dir/metrics.json" "$out/gowalla_gpu_metrics.json" 2>/dev/null
cp "$run_dir/metadata.json" "$out/gowalla_gpu_metadata.json" 2>/dev/null
# 3. time to quality GPU against CPU, evaluation at 1024 factors, candidates on the GPU
timeout 240 "$PY" scripts/benchmark_gpu.py --data-root "$data_root" --out "$out/stages" \
    --cpu-threads "$(nproc)" 2>&1 | tee "$out/stages.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
# 4. the exact-epoch benchmark: MovieLens-20M-scale synthetic, 64..1024 factors, fp32
timeout 240 "$PY" scripts/benchmark.py --device cuda --datasets synthetic:ml20m \
    --factors 64 128 256 512 1024 --iterations 5 --threads 16 --timeout 240 --out "$out/bench" \
    2>&1 | tee "$out/benchmark.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
exit $status
