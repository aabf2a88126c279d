#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets into fuzz/corpus/TARGET: tiny model files made by
# charter-fuzz, and the project's own configurations, data files and golden wire frames.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product charter-fuzz >&2
rm -rf fuzz/corpus && mkdir -p fuzz/corpus/config fuzz/corpus/jsonl fuzz/corpus/wire
.build/release/charter-fuzz seeds fuzz/corpus
cp examples/*.yaml constitutions/*.yaml fuzz/corpus/config/
for f in examples/*.jsonl data/*.jsonl; do head -n 4 "$f" > "fuzz/corpus/jsonl/$(basename "$f")"; done
cp protocol/fixtures/*.bin fuzz/corpus/wire/
find fuzz/corpus -type f | sort
