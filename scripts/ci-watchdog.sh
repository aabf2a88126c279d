#!/usr/bin/env bash
# Usage: scripts/ci-watchdog.sh LOG SECONDS
# Watches a test run's log. Should it stop growing for SECONDS, the run is stuck: the watchdog
# prints the test that was running, the process tree and every thread's stack of the test runner
# and the charter processes (gdb, when installed), then kills the test runner so CI goes on to its
# summary instead of running out of time with nothing to show. Ends by itself with the test run.
set -uo pipefail
log=$1 limit=$2
last=-1 still=0
while sleep 10; do
    runner=$(pgrep -f 'CharterPackageTests.xctest' | head -n 1)
    size=$(stat -c %s "$log" 2>/dev/null || echo 0)
    if [ "$size" != "$last" ]; then last=$size still=0; continue; fi
    still=$((still + 10))
    [ "$still" -ge "$limit" ] || continue
    [ -n "$runner" ] || { still=0; continue; } # still building: the log grows again once tests start
    {
        echo "ci-watchdog: no test output for $limit s; the last test started:"
        grep "' started at" "$log" | tail -n 1
        ps -eo pid,ppid,stat,etime,args --forest | grep -v ' ps -eo' | grep -E 'charter|CharterPackageTests|python|llama|prometheus|slurm' || true
        for pid in $(pgrep -f 'CharterPackageTests.xctest|/charter |/charter$'); do
            echo "--- threads of $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
            if command -v gdb > /dev/null; then
                timeout 60 gdb -p "$pid" -batch -ex 'thread apply all bt 12' 2>/dev/null | grep -E '^(Thread|#)' | cut -c1-160
            fi
        done
    } 2>&1 | tee .ci-hang.txt
    echo "ci-watchdog: stopping the test runner (pid $runner)"
    pkill -KILL -f 'CharterPackageTests.xctest'
    exit 0
done
