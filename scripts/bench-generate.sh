#!/usr/bin/env bash
# Generation benchmark: charter beside llama.cpp (F32 and Q4_1), measured in the same run.
# Usage: scripts/bench-generate.sh [batches, default "1 8 32"]
# Needs: a release build (swift build -c release) and the model (scripts/fetch-model.sh).
# The peer, llama-cpp-python built from source (about 10 minutes the first time), goes into
# .bench/venv; the F32 conversion of the model into models/smollm2-135m-f32.gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${*:-1 8 32}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
f32=models/smollm2-135m-f32.gguf
venv=.bench/venv

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp, gguf" 2>/dev/null; then
    python3 -m venv "$venv"
    # A native build uses instructions some virtual CPUs fault on (AMX); name the vector set instead.
    if grep -qw avx512f /proc/cpuinfo; then simd="-DGGML_AVX512=ON"; else simd="-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"; fi
    CMAKE_ARGS="-DGGML_NATIVE=OFF $simd -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        "$venv/bin/pip" install --quiet llama-cpp-python==0.3.36 gguf==0.19.0 numpy
fi
[ -f "$f32" ] || "$venv/bin/python" scripts/gguf_to_f32.py "$model" "$f32"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
.build/release/charter --version
# One process per measurement, so each peak RSS belongs to one batch size.
for b in $batches; do
    "$venv/bin/python" scripts/bench_llamacpp.py --model "$f32" --batches "$b" --new-tokens 128 | tail -n 1
    "$venv/bin/python" scripts/bench_llamacpp.py --model "$model" --batches "$b" --new-tokens 128 | tail -n 1
    .build/release/charter bench generate --batches "$b" --new-tokens 128 | tail -n 1
done
