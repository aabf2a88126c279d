#!/usr/bin/env bash
# Speed of the recipe's stages on SmolLM2-135M (BENCHMARKS.md, "Self-revision and labels"):
# `charter revise` on examples/sl-cai-smollm2.yaml and `charter label` on examples/polite-pairs.jsonl,
# each in this process and on 1 and 2 local workers, beside `charter bench generate` at the batch
# the revise stage decodes with (16). Needs a release build and the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
charter=.build/release/charter
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$charter --version | head -n 2
$charter bench generate --batches 16 --new-tokens 64 --prompt-tokens 256
metrics() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], {k: round(v, 2) if isinstance(v, float) else v for k, v in m.items() if k in ("items", "seconds", "items_per_second", "tokens_generated", "tokens_per_second")})' "$1" "$2"; }
for how in "--in-process" "--workers 1" "--workers 2"; do
    name=$(echo "$how" | tr -d ' -')
    $charter revise --config examples/sl-cai-smollm2.yaml --out "$out/revise-$name" $how >/dev/null
    metrics "$out/revise-$name/revise.metrics.json" "revise $how"
done
for how in "--in-process" "--workers 1" "--workers 2"; do
    name=$(echo "$how" | tr -d ' -')
    $charter label --pairs examples/polite-pairs.jsonl --constitution constitutions/polite.yaml --out "$out/labels-$name.jsonl" $how 2>&1 >/dev/null | grep "labels/s"
    metrics "$out/labels-$name.stage/options.metrics.json" "label $how"
done
