#!/usr/bin/env bash
# A network partition that heals, in network namespaces (needs root): the coordinator and worker a0
# in one namespace, workers b0 and b1 in another, joined by a veth pair. examples/tiny.yaml runs
# 30 iterations twice: once as it is, once with the link down for SECONDS (default 12) after the
# fifth iteration. Prints both run times and what the fault cost, and checks that every iteration holds each of
# its samples exactly once. `tc netem` (latency, loss) is not in every kernel; this one needs none.
#   scripts/fault-partition.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/.build/release/charter
outage=${1:-12}
work=$(mktemp -d /tmp/charter-fault-XXXXXX)
cleanup() {
    ip netns pids charter-a 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids charter-b 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del charter-a 2>/dev/null || true
    ip netns del charter-b 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cleanup; work=$(mktemp -d /tmp/charter-fault-XXXXXX)
ip netns add charter-a
ip netns add charter-b
ip link add charter-va type veth peer name charter-vb
ip link set charter-va netns charter-a
ip link set charter-vb netns charter-b
ip -n charter-a addr add 10.77.0.1/24 dev charter-va
ip -n charter-b addr add 10.77.0.2/24 dev charter-vb
for ns in a b; do ip -n charter-$ns link set lo up; ip -n charter-$ns link set charter-v$ns up; done
sed -e "s|dir: ../runs/tiny|dir: RUNDIR|" -e "s|iterations: 8|iterations: 30|" -e "s|max_new_tokens: 8|max_new_tokens: 32|" \
    -e "s|prompts: prompts.jsonl|prompts: $PWD/examples/prompts.jsonl|" examples/tiny.yaml > "$work/base.yaml"

run() { # NAME OUTAGE_SECONDS (0: none)
    local name=$1 down=$2
    sed "s|RUNDIR|$work/$name|" "$work/base.yaml" > "$work/$name.yaml"
    local began=$(date +%s.%N)
    ip netns exec charter-a "$bin" coordinator --config "$work/$name.yaml" --bind tcp://10.77.0.1:5555 > "$work/$name-c.log" 2>&1 &
    local coordinator=$!
    ip netns exec charter-a "$bin" worker --connect tcp://10.77.0.1:5555 --id a0 --chunk-bind "tcp://10.77.0.1:*" > "$work/$name-a0.log" 2>&1 &
    for i in 0 1; do
        ip netns exec charter-b "$bin" worker --connect tcp://10.77.0.1:5555 --id b$i --chunk-bind "tcp://10.77.0.2:*" > "$work/$name-b$i.log" 2>&1 &
    done
    if [ "$down" != 0 ]; then
        # Mid-run: once 5 iterations are done.
        until [ "$(cat "$work/$name/metrics.jsonl" 2>/dev/null | wc -l)" -ge 5 ]; do sleep 0.2; done
        ip -n charter-b link set charter-vb down
        sleep "$down"; ip -n charter-b link set charter-vb up
    fi
    wait "$coordinator" || { echo "$name: the coordinator failed"; tail -5 "$work/$name-c.log"; exit 1; }
    local ended=$(date +%s.%N)
    wait || true # the workers, told goodbye
    python3 - "$work/$name/metrics.jsonl" "$name" "$began" "$ended" <<'PY'
import json, sys
path, name, began, ended = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
lines = [json.loads(l) for l in open(path)]
its = [l["iteration"] for l in lines]
assert its == list(range(30)), f"{name}: iterations {its}"
assert all(l["samples"] == 16 for l in lines), f"{name}: samples {[l['samples'] for l in lines]}"
print(f"{name}: {ended - began:.1f} s, 30 iterations of 16 samples each, re-dispatched "
      f"{max(l['redispatched'] for l in lines)}, speculative copies {max(l['speculative_copies'] for l in lines)}, "
      f"stale dropped {max(l['stale_dropped'] for l in lines)}, duplicates dropped {max(l['duplicates_dropped'] for l in lines)}")
PY
}
run healthy 0
run partitioned "$outage"
grep -h "stopped heartbeating\|registered\|lost" "$work"/partitioned-*.log | sed 's/^[^ ]* /  /' | sort | uniq -c | head -20
