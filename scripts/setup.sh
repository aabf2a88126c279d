#!/usr/bin/env bash
# Installs what Charter needs on a fresh Debian 12 machine (as root), builds it, fetches the model.
set -euo pipefail
cd "$(dirname "$0")/.."
# python3-zmq and python3-protobuf: the Python worker (scripts/python-worker) and its test.
# libcurl4: Foundation's URLSession (the labeler's endpoint judge) runs on it.
packages="libopenblas-dev libzmq3-dev pkg-config libcurl4 python3-zmq python3-protobuf"
python3 -m pip --version >/dev/null 2>&1 || packages="$packages python3-pip"
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
scripts/fetch-model.sh
swift build -c release
