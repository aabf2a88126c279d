#!/usr/bin/env bash
# Fuzzes one parser of outside input with libFuzzer and AddressSanitizer:
#   scripts/fuzz.sh TARGET [SECONDS]    (default 30)
# Targets: gguf safetensors hf-config tokenizer-json config jsonl wire (Sources/CharterFuzz).
# Builds charter-fuzz in .build-fuzz (its own build folder; the first build takes minutes), starts
# from the seed corpus fuzz/corpus/TARGET and keeps what it finds in .build-fuzz/corpus/TARGET.
# A crash, a leak (fuzz/lsan.supp lists Foundation's), a hang over 10 s or more than 4 GB of
# memory stops it: the input that did it
# is saved as .build-fuzz/crash-TARGET-* (or leak-, timeout-, oom-) and the exit status is non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-30}
[ -d "fuzz/corpus/$target" ] || { echo "fuzz.sh: no target \"$target\" (fuzz/corpus has: $(ls fuzz/corpus | tr '\n' ' '))" >&2; exit 2; }
swift build -c release --scratch-path .build-fuzz --product charter-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld >&2
mkdir -p ".build-fuzz/corpus/$target"
CHARTER_FUZZ_TARGET=$target LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp" .build-fuzz/release/charter-fuzz -max_total_time="$seconds" -max_len=65536 \
    -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 -artifact_prefix=".build-fuzz/crash-$target-" \
    ".build-fuzz/corpus/$target" "fuzz/corpus/$target"
