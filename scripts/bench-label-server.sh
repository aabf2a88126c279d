#!/usr/bin/env bash
# Labels per second (BENCHMARKS.md, "Self-revision and labels"): `charter label` with the local
# judge, in this process and on 1 and 2 workers, beside the same questions through llama-cpp-python's
# OpenAI-compatible server and through `charter serve` (F32 weights, the same prompt text), in one
# run. 24 pairs x 2 orders.
# Needs a release build; the peer comes from scripts/setup-peer.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-peer.sh
charter=.build/release/charter
f32=models/smollm2-135m-f32.gguf
out=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.bench/venv/bin/python -m llama_cpp.server --model "$f32" --model_alias smollm2 --host 127.0.0.1 --port "$port" \
    --n_ctx 2048 --n_threads 2 --logits_all true --type_k 0 --type_v 0 >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break; sleep 0.2; done
$charter --version | head -n 1
label() { $charter label --pairs examples/polite-pairs.jsonl --constitution constitutions/polite.yaml --out "$out/$1.jsonl" "${@:2}" 2>&1 >/dev/null | grep "labels/s" | sed "s/^/$1: /"; }
label server-c1 --judge-url "http://127.0.0.1:$port" --judge-model smollm2 --judge-concurrency 1
label server-c2 --judge-url "http://127.0.0.1:$port" --judge-model smollm2 --judge-concurrency 2
kill $server; wait $server 2>/dev/null || true
$charter serve --model "$f32" --name smollm2 --bind "127.0.0.1:$port" >"$out/serve.log" 2>&1 &
server=$!
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break; sleep 0.2; done
label charter-serve-c1 --judge-url "http://127.0.0.1:$port" --judge-model smollm2 --judge-concurrency 1
label charter-serve-c8 --judge-url "http://127.0.0.1:$port" --judge-model smollm2 --judge-concurrency 8
kill $server; wait $server 2>/dev/null || true
label local-in-process --judge "$f32" --in-process
label local-1-worker --judge "$f32" --workers 1
label local-2-workers --judge "$f32" --workers 2
python3 - "$out" <<'PY'
import json, sys
a = [json.loads(l)["p_a"] for l in open(sys.argv[1] + "/server-c1.jsonl")]
b = [json.loads(l)["p_a"] for l in open(sys.argv[1] + "/local-in-process.jsonl")]
print(f"largest |p_a(server) - p_a(local)| over {len(a)} pairs: {max(abs(x - y) for x, y in zip(a, b)):.2e}")
PY
