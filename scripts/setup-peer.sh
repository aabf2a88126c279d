#!/usr/bin/env bash
# The peer that benchmarks and one test compare Charter with: llama-cpp-python (with its
# OpenAI-compatible server) built from source into .bench/venv (about 10 minutes on 2 cores the
# first time), and models/smollm2-135m-f32.gguf, the default model converted to F32 and checked
# against the llama.cpp reference (scripts/gguf_to_f32.py). Does nothing when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
f32=models/smollm2-135m-f32.gguf
venv=.bench/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp, llama_cpp.server, gguf" 2>/dev/null; then
    # The build needs a C++ compiler (CMake itself comes from PyPI) and Debian's python3 its venv module.
    missing=$(for p in g++ python3-venv; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; fi
    python3 -m venv "$venv"
    # A native build uses instructions some virtual CPUs fault on (AMX); name the vector set instead.
    if grep -qw avx512f /proc/cpuinfo; then simd="-DGGML_AVX512=ON"; else simd="-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"; fi
    CMAKE_ARGS="-DGGML_NATIVE=OFF $simd -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        "$venv/bin/pip" install --quiet "llama-cpp-python[server]==0.3.36" gguf==0.19.0 numpy
fi
[ -f "$f32" ] || "$venv/bin/python" scripts/gguf_to_f32.py "$model" "$f32"
