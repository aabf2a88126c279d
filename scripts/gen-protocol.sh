#!/usr/bin/env bash
# Regenerates Sources/Wire/charter.pb.swift and scripts/python-worker/charter_pb2.py from
# protocol/charter.proto. The output is committed,
# so builds need neither protoc nor the plugin; run this after changing the schema.
# Needs: protoc (apt-get install protobuf-compiler) and protoc-gen-swift, built from the
# swift-protobuf package this project depends on (several minutes on 2 cores the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "gen-protocol: protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
plugin_dir=.build-protogen
if [ ! -x "$plugin_dir/release/protoc-gen-swift" ]; then
    swift build -c release --scratch-path "$plugin_dir" --product protoc-gen-swift
fi
protoc --plugin=protoc-gen-swift="$plugin_dir/release/protoc-gen-swift" --swift_opt=Visibility=Public \
    --swift_out=Sources/Wire --proto_path=protocol protocol/charter.proto
protoc --python_out=scripts/python-worker --proto_path=protocol protocol/charter.proto
echo "wrote Sources/Wire/charter.pb.swift and scripts/python-worker/charter_pb2.py"
