#!/usr/bin/env python3
"""Prints the scalars of TensorBoard event files under a folder as JSON, read by the `tensorboard`
package's own loader: {"RUN-RELATIVE-FOLDER": {"tag": [[step, value], ...]}}.
Used by the tests to check Charter's event files; run it with the ops venv (scripts/setup-ops.sh)."""
import json
import sys

from tensorboard.backend.event_processing import event_multiplexer

root = sys.argv[1]
mux = event_multiplexer.EventMultiplexer()
mux.AddRunsFromDirectory(root)
mux.Reload()
out = {}
for run, tags in mux.Runs().items():
    out[run] = {tag: [[e.step, e.value] for e in mux.Scalars(run, tag)] for tag in tags.get("scalars", [])}
print(json.dumps(out, sort_keys=True))
