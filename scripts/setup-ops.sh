#!/usr/bin/env bash
# The operator's tools the tests run Charter against (as root, Debian 12): Prometheus (scrapes
# --metrics-bind), Slurm and munge (deploy/slurm, one node), and in .ops/venv the PyPI packages
# tensorboard (reads the event files) and kubernetes-validate (checks deploy/k8s offline).
# Does nothing that is already there. A test whose tool is missing is skipped and says which.
set -euo pipefail
cd "$(dirname "$0")/.."
packages="prometheus slurm-wlm munge python3-venv"
missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    apt-get update -qq
    # No recommends: prometheus would pull in node-exporter and its services.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
venv=.ops/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tensorboard, kubernetes_validate" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "tensorboard==2.21.0" "kubernetes-validate==1.37.0"
fi
