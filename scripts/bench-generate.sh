#!/usr/bin/env bash
# Generation benchmark: charter beside llama.cpp (F32 and Q4_1), measured in the same run.
# Usage: scripts/bench-generate.sh [batches, default "1 8 32"]
# Needs: a release build (swift build -c release) and the model (scripts/fetch-model.sh).
# The peer and the F32 conversion of the model come from scripts/setup-peer.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${*:-1 8 32}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
f32=models/smollm2-135m-f32.gguf
venv=.bench/venv

scripts/setup-peer.sh

echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
.build/release/charter --version
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
kernels="avx2 $(has avx512f avx512bw avx512vl && echo avx512) $(has avx512_bf16 && echo avx512bf16)"
# One process per measurement, so each peak RSS belongs to one batch size.
for b in $batches; do
    "$venv/bin/python" scripts/bench_llamacpp.py --model "$f32" --batches "$b" --new-tokens 128 | tail -n 1
    "$venv/bin/python" scripts/bench_llamacpp.py --model "$model" --batches "$b" --new-tokens 128 | tail -n 1
    # Each projection kernel this CPU runs, with float32 and with bfloat16 weights.
    for weights in f32 bf16; do
        for kernel in $kernels; do
            echo -n "kernel $kernel, weights $weights: "
            CHARTER_KERNEL=$kernel .build/release/charter bench generate --batches "$b" --new-tokens 128 --weights $weights | tail -n 1
        done
    done
done
