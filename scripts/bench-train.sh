#!/usr/bin/env bash
# Training benchmark: charter beside PyTorch, same shapes and threads, measured in the same run.
# Usage: scripts/bench-train.sh   (after swift build -c release and scripts/fetch-model.sh)
# The peer (torch, transformers, gguf, accelerate from PyPI; a few GB) goes into .bench/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
venv=.bench/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, gguf, accelerate" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch transformers gguf accelerate
fi
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
.build/release/charter --version
# One process per measurement, so each peak RSS belongs to one configuration.
for mode in full lora; do
    "$venv/bin/python" scripts/bench_torch_train.py --model "$model" --mode "$mode" --threads 2 2>/dev/null | tail -n 1
    .build/release/charter bench train --mode "$mode" | tail -n 1
done
