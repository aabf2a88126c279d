#!/usr/bin/env bash
# Coordinator and workers: broadcast, dispatch and end-to-end rollout speed, each beside its peer
# measured in the same run. Usage: scripts/bench-cluster.sh [iterations]   (after swift build -c
# release and scripts/fetch-model.sh). Results go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
charter=.build/release/charter
iterations=${1:-3}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
$charter --version

echo "## broadcast of the SmolLM2-135M weights (float32) beside a raw ZeroMQ transfer"
$charter bench broadcast --workers 1,2,4
echo "## dispatch: 256 simulated workers (no model), tasks through the coordinator"
$charter bench dispatch --workers 256 --tasks 20000

echo "## end to end: examples/smollm2.yaml for $iterations iterations, in one process and with 1 and 2 workers"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for mode in rl local1 local2; do
    sed "s#dir: ../runs/smollm2#dir: $tmp/$mode#; s#prompts: #prompts: $PWD/examples/#; s#policy: ../models/#policy: $PWD/models/#; s#iterations: 20#iterations: $iterations#" examples/smollm2.yaml > "$tmp/$mode.yaml"
    case $mode in
        rl) $charter rl --config "$tmp/$mode.yaml" > /dev/null 2>&1 ;;
        local1) $charter local --workers 1 --config "$tmp/$mode.yaml" > /dev/null 2>&1 ;;
        local2) $charter local --workers 2 --config "$tmp/$mode.yaml" > /dev/null 2>&1 ;;
    esac
    python3 - "$mode" "$tmp/$mode/metrics.jsonl" <<'PY'
import json, sys
mode, path = sys.argv[1], sys.argv[2]
lines = [json.loads(l) for l in open(path)]
tokens = sum(l["samples"] * l["response_tokens_mean"] for l in lines)
gen = sum(l["generation_seconds"] for l in lines)
# In one process the reference pass belongs to the update; workers do it (and scoring) before returning samples.
rollout = sum(l["generation_seconds"] + l["scoring_seconds"] + (l["reference_seconds"] if mode == "rl" else 0) for l in lines)
total = sum(l["total_seconds"] for l in lines)
print(f"{mode}: {len(lines)} iterations, {tokens:.0f} response tokens; rollouts (generate, score, reference log-probs) "
      f"{rollout:.1f} s = {tokens / rollout:.1f} tokens/s; generation phase alone {gen:.1f} s; iteration total {total:.1f} s")
PY
done
